"""The DICOM storage node a PACS sends studies to (``python -m xray_spark.node``); see docs/dicom-node.md.

:mod:`~xray_spark.node.scp` is the node itself (pynetdicom: C-ECHO and C-STORE SCP into the
spool of :mod:`xray_spark.spool`), :mod:`~xray_spark.node.access` who may send to it, and
``__main__`` its command line.
"""
