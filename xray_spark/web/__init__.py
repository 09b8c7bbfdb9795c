"""The worklist web app: readers sign in, see the worklist and a patient's films, and give their verdicts.

``python -m xray_spark.web start|stop|status|run|add-user`` (see :mod:`xray_spark.web.__main__`).
Pages are read from the lake's Parquet tables with pyarrow (no Spark session per request);
verdicts go to SQLite (:mod:`xray_spark.web.verdicts`), accounts to a file outside the lake
(:mod:`xray_spark.web.accounts`).
"""
