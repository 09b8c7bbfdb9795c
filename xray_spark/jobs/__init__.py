"""The jobs' command lines: each module parses its arguments, opens the lake and runs one stage's entry point.

Run one with ``xray-spark <job> [args]`` (:mod:`xray_spark.launch`: spark-submit with the
package's log4j configuration and driver JVM options), or ``spark-submit jobs/<job>.py``.
"""
