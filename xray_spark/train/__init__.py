"""The train job: the multi-label CNN trained from the Petastorm store, on the driver or on Spark executors."""
