"""The SQL server: Spark's Thrift JDBC/ODBC server over the lake's ``xray.*`` tables, read-only.

``python -m xray_spark.server start|stop|status`` (``make sql-server`` / ``make sql-server-stop``).

* :mod:`.serve`: the server process: a Spark session from the installed pyspark, the lake's
  tables and views registered, every client session guarded read-only, Spark's
  ``HiveThriftServer2`` started on it, and the lake watched for new scoring runs.
* :mod:`.guard`: the read-only rule of ``jobs/sql.py`` (:mod:`xray_spark.readonly`) put into
  the SQL parser of every session the server opens for a client.
* :mod:`.watch`: what changed in the lake since the last look, and the catalog brought up
  to date without a restart.
* :mod:`.daemon`: start in the background, wait until it answers, stop exactly that process
  group.
"""
