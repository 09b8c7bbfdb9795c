"""The score job: finding probabilities for the studies in the store, written by a pandas UDF."""
