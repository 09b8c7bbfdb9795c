"""The services' settings (the SQL server, the DICOM node, delivery, the worklist and its web app).

Part of :mod:`xray_spark.config`, which parses them with the rest; kept apart to keep each module short.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SqlServerSettings:
    """The Thrift JDBC/ODBC server (``python -m xray_spark.server``); see docs/query.md."""

    host: str = "127.0.0.1"  # another address needs authentication other than NONE
    port: int = 10000
    refresh_seconds: float = 10.0  # how often the lake is looked at for new runs
    authentication: str = "NONE"  # NONE (loopback only) | LDAP | KERBEROS: Hive's hive.server2.authentication
    hive_conf: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. hive.server2.authentication.ldap.url
    # A statement still running after this many seconds is cancelled (the client gets an error).
    statement_timeout_seconds: int = 300
    # Results a statement may bring back to the server at most (Spark's spark.driver.maxResultSize), MiB.
    max_result_mb: int = 256


@dataclasses.dataclass(frozen=True)
class DicomNodeSettings:
    """The DICOM storage node (``python -m xray_spark.node``) a PACS sends studies to; see docs/dicom-node.md."""

    ae_title: str = "XRAY_SPARK"
    host: str = "127.0.0.1"  # another address needs an allow-list
    port: int = 11112
    # Received files, named by SOP Instance UID: they hold what the PACS sent, names included,
    # so the spool lives outside the lake (a spool inside it is refused).
    spool: str = ".dicom-spool"
    # Calling AE titles allowed, each with the address it must come from: ["PACS@10.1.2.3"].
    # Empty: any AE title, and only on a loopback host.
    allow: list[str] = dataclasses.field(default_factory=list)
    max_associations: int = 20
    max_associations_per_address: int = 10  # connections one address may hold (checked at accept)
    max_pdu: int = 262144  # the largest PDU the node announces and receives, bytes
    acse_timeout_seconds: float = 30.0  # association negotiation
    dimse_timeout_seconds: float = 60.0  # a DIMSE message (one C-STORE) once its association is up
    network_timeout_seconds: float = 60.0  # an idle connection is closed
    pdu_timeout_seconds: float = 30.0  # each PDU must arrive whole within this (a trickle is cut off)
    association_timeout_seconds: float = 3600.0  # a whole association, from its first byte
    stop_timeout_seconds: float = 30.0  # stop waits this long for the associations in flight
    # After a successful night: keep the files where they are (marked ingested), or move them to done/.
    after_ingest: str = "keep"  # keep | done


@dataclasses.dataclass(frozen=True)
class DeliverSettings:
    """Results sent back to the PACS (``jobs/deliver.py``, and the nightly flow's last step); see docs/deliver.md."""

    # Each "AE_TITLE@HOST:PORT" (a DICOM node: C-STORE) or "folder:DIR" (outside the lake).
    # Empty: deliver sends nothing unless given --to / --to-folder, and the nightly flow skips it.
    destinations: list[str] = dataclasses.field(default_factory=list)
    secondary_capture: bool = False  # also a picture with the heatmap burnt in, for viewers without SR
    uid_root: str = ""  # the organisation's UID root for result objects; empty: UUID-derived 2.25 UIDs
    ae_title: str = "XRAY_SPARK"  # the calling AE title
    timeout_seconds: float = 60.0  # connection, association and each C-STORE
    max_side: int = 1024  # the Secondary Capture's longest side, px
    batch_size: int = 32  # films per Arrow batch when the objects are built on the executors
    record_every: int = 50  # films between two appends to xray.deliveries
    # A film whose source file is gone or changed this many runs running is given up (recorded once, not retried).
    give_up_after_attempts: int = 3


@dataclasses.dataclass(frozen=True)
class WorklistSettings:
    # A link from each worklist film to the study in the PACS viewer, e.g.
    # "https://pacs.example/viewer?StudyInstanceUIDs={study_uid}"; also {accession}. Empty: no link.
    viewer_url: str = ""


@dataclasses.dataclass(frozen=True)
class WebSettings:
    host: str = "127.0.0.1"  # another address needs tls_cert and tls_key
    port: int = 8470
    accounts: str = ".xray-web/accounts.sqlite"  # scrypt hashes, sessions, the cookie key: outside the lake
    verdicts: str = ""  # SQLite (WAL) on the app's local disk; empty: <lake>/verdicts/verdicts.sqlite
    tls_cert: str = ""  # PEM files: the app serves HTTPS and its cookies are Secure
    tls_key: str = ""
    session_hours: float = 12.0
    signin_free_failures: int = 3  # failed sign-ins (per name and per address) before each next one waits
    signin_max_delay_seconds: float = 900.0  # the wait doubles per failure up to this
    threads: int = 16
    films_per_page: int = 100
