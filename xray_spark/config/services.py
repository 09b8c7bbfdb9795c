"""The services' settings sections (the SQL server, the DICOM node, delivery, the worklist and its web app).

Declared as the pipeline's are (:mod:`xray_spark.config.sections`): each key's type, default,
bounds and comment together; a rule joining a section's keys is its ``check()``.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from xray_spark.config.schema import setting
from xray_spark.errors import ConfigError

#: Values of ``sql_server.authentication`` (Hive's ``hive.server2.authentication``).
AUTHENTICATIONS = ("NONE", "LDAP", "KERBEROS")
#: HiveServer2 settings that a ``sql_server`` key owns: through ``hive_conf`` they would skip its checks.
OWNED_HIVE_KEYS = {
    "hive.server2.thrift.bind.host": "sql_server.host",
    "hive.server2.thrift.http.bind.host": "sql_server.host",
    "hive.server2.bind.host": "sql_server.host",
    "hive.server2.thrift.port": "sql_server.port",
    "hive.server2.thrift.http.port": "sql_server.port",
    "hive.server2.transport.mode": "sql_server.port (binary transport only)",
    "hive.server2.authentication": "sql_server.authentication",
}


@dataclasses.dataclass(frozen=True)
class SqlServerSettings:
    """The Thrift JDBC/ODBC server (``python -m xray_spark.server``); see docs/query.md."""

    host: str = setting("127.0.0.1", "another address needs authentication other than NONE")
    port: int = setting(10000, "a TCP port", ge=1, le=65535)
    refresh_seconds: float = setting(10.0, "how often the lake is looked at for new runs", gt=0, le=3600)
    authentication: str = setting(
        "NONE", "NONE (loopback only) | LDAP | KERBEROS: Hive's hive.server2.authentication", choices=AUTHENTICATIONS
    )
    hive_conf: dict[str, str] = setting(factory=dict, doc="more HiveServer2 settings, e.g. its LDAP URL")
    statement_timeout_seconds: int = setting(300, "a statement still running is cancelled after this", ge=1, le=86400)
    max_result_mb: int = setting(
        256, "results a statement may bring back (spark.driver.maxResultSize), MiB", ge=1, le=65536
    )

    def check(self) -> None:
        for key in self.hive_conf:
            owner = OWNED_HIVE_KEYS.get(key)
            if owner is not None:
                raise ConfigError(
                    f"configuration key 'sql_server.hive_conf.{key}' is set by '{owner}': set that instead "
                    "(it goes through the loopback and authentication check)"
                )


def _ae_title(title: str, where: str) -> str:
    title = title.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isascii() or not title.isprintable():
        raise ConfigError(f"{where}: an AE title is 1 to 16 printable ASCII characters without a backslash")
    return title


def parse_allow(entries: list[str]) -> dict[str, set[str]]:
    """``["PACS@10.1.2.3", ...]`` -> {AE title: {addresses}}; a clear error for anything else."""
    allowed: dict[str, set[str]] = {}
    for entry in entries:
        where = f"dicom_node.allow entry {entry!r}"
        title, at, host = entry.rpartition("@")
        if not at:
            raise ConfigError(f"{where} must look like AE_TITLE@ADDRESS, e.g. PACS@10.1.2.3")
        try:
            address = str(ipaddress.ip_address(host.strip()))
        except ValueError:
            raise ConfigError(f"{where}: {host!r} is not an IP address (names are not looked up)") from None
        allowed.setdefault(_ae_title(title, where), set()).add(address)
    return allowed


@dataclasses.dataclass(frozen=True)
class DicomNodeSettings:
    """The DICOM storage node (``python -m xray_spark.node``) a PACS sends studies to; see docs/dicom-node.md."""

    ae_title: str = setting("XRAY_SPARK", "the node's AE title")
    host: str = setting("127.0.0.1", "another address needs an allow-list")
    port: int = setting(11112, "a TCP port", ge=1, le=65535)
    spool: str = setting(
        "dicom-spool", "received files, named by SOP Instance UID: they hold identity, so outside the lake", path=True
    )
    allow: list[str] = setting(
        factory=list, doc='calling AE titles allowed, each with its address: ["PACS@10.1.2.3"]; empty: loopback only'
    )
    tls_cert: str = setting("", "a PEM certificate: the node speaks DICOM over TLS only (PS3.15 B.1)", path=True)
    tls_key: str = setting("", "its PEM key, outside the lake", path=True)
    tls_ca_file: str = setting(
        "", "with TLS: the authority (PEM) whose signed certificate each sender must show; empty: none asked", path=True
    )
    max_associations: int = setting(20, "associations at once", ge=1)
    max_associations_per_address: int = setting(10, "connections one address may hold (checked at accept)", ge=1)
    max_pdu: int = setting(262144, "the largest PDU the node announces and receives, bytes", ge=4096, le=16 << 20)
    acse_timeout_seconds: float = setting(30.0, "association negotiation", gt=0)
    dimse_timeout_seconds: float = setting(60.0, "a DIMSE message (one C-STORE) once its association is up", gt=0)
    network_timeout_seconds: float = setting(60.0, "an idle connection is closed", gt=0)
    pdu_timeout_seconds: float = setting(30.0, "each PDU must arrive whole within this (a trickle is cut off)", gt=0)
    association_timeout_seconds: float = setting(3600.0, "a whole association, from its first byte", gt=0)
    stop_timeout_seconds: float = setting(30.0, "stop waits this long for the associations in flight", gt=0)
    after_ingest: str = setting(
        "keep",
        "after a successful night: keep the files (marked ingested) or move them to done/",
        choices=("keep", "done"),
    )

    def check(self) -> None:
        _ae_title(self.ae_title, "dicom_node.ae_title")
        parse_allow(self.allow)
        if bool(self.tls_cert) != bool(self.tls_key) or (self.tls_ca_file and not self.tls_cert):
            raise ConfigError(
                "configuration keys 'dicom_node.tls_cert' and 'tls_key' go together (tls_ca_file needs them)"
            )
        if self.max_associations_per_address > self.max_associations:
            raise ConfigError(
                "configuration key 'dicom_node.max_associations_per_address' must lie in "
                "[1, dicom_node.max_associations]"
            )


@dataclasses.dataclass(frozen=True)
class AuditSettings:
    """The audit trail (PS3.15 A.5 messages, IHE ATNA): sign-ins, pages readers open, films in and out; see
    docs/services.md#the-audit-trail."""

    file: str = setting(
        "audit/audit.log",
        "the messages, one per line, outside the lake (they carry Patient IDs); empty: none",
        path=True,
    )
    syslog: str = setting("", "also sent to this collector: udp://HOST:PORT or tcp://HOST:PORT (RFC 5424); empty: none")

    def check(self) -> None:
        from urllib.parse import urlsplit

        if self.syslog:
            parts = urlsplit(self.syslog)
            if parts.scheme not in ("udp", "tcp") or not parts.hostname:
                raise ConfigError("configuration key 'audit.syslog' must be udp://HOST:PORT or tcp://HOST:PORT")


@dataclasses.dataclass(frozen=True)
class PriorsSettings:
    """A new patient's earlier films, fetched from the archive on the night of their first film: a classic PACS by
    C-FIND and C-MOVE (``pacs``), else the DICOMweb source; see docs/dicom-node.md#a-new-patients-earlier-films."""

    enabled: bool = setting(True, "fetch them when priors.pacs or dicomweb_source.url is set")
    pacs: str = setting(
        "",
        "a PACS asked by C-FIND and C-MOVE, AE_TITLE@HOST:PORT or tls:AE_TITLE@HOST:PORT; it moves the films to "
        "dicom_node.ae_title, the node writing this spool; empty: the DICOMweb source",
    )
    max_films: int = setting(3, "earlier frontal chest films per new patient, the newest first", ge=0)
    years: float = setting(5.0, "reaching back this many years before the patient's first film tonight", gt=0)
    max_seconds: float = setting(600.0, "a night spends at most this long fetching priors", gt=0)
    max_patients: int = setting(200, "new patients a night fetches priors for at most", ge=0)

    def check(self) -> None:
        from xray_spark.destinations import DICOM, parse_destination
        from xray_spark.errors import UsageError

        if self.pacs:
            try:
                kind = parse_destination(self.pacs).kind
            except UsageError as exc:
                raise ConfigError(f"configuration key 'priors.pacs': {exc}") from None
            if kind != DICOM:
                raise ConfigError("configuration key 'priors.pacs': AE_TITLE@HOST:PORT or tls:AE_TITLE@HOST:PORT")


@dataclasses.dataclass(frozen=True)
class DicomWebSourceSettings:
    """Tonight's chest films pulled from a DICOMweb archive into the node's spool (QIDO-RS, WADO-RS); see
    docs/dicom-node.md#films-from-a-dicomweb-archive."""

    url: str = setting("", "the archive's DICOMweb root, e.g. https://pacs.example/dicom-web; empty: no pull")
    auth_file: str = setting(
        "", "a file outside the lake: 'Bearer <token>' or 'Basic <user>:<password>' (mode 600); empty: none", path=True
    )
    ca_file: str = setting("", "certificate authorities (PEM) for https; empty: the system's", path=True)
    modalities: list[str] = setting(factory=lambda: ["CR", "DX"], doc="the modalities of the films pulled")
    body_parts: list[str] = setting(
        factory=lambda: ["CHEST"], doc="Body Part Examined values pulled (a film that has none is pulled too)"
    )
    views: list[str] = setting(
        factory=lambda: ["PA", "AP"], doc="View Position values pulled (a film that has none is pulled too)"
    )
    days: int = setting(1, "study dates from this many days before today, and since the last pull that ended", ge=0)
    max_films: int = setting(5000, "films pulled in one run at most (the rest wait for the next)", ge=1)
    timeout_seconds: float = setting(60.0, "each request", gt=0)

    def check(self) -> None:
        from xray_spark.errors import UsageError

        if self.url:
            from xray_spark.dicomweb import service_url

            try:
                service_url(self.url, "dicomweb_source.auth_file")
            except UsageError as exc:
                raise ConfigError(f"configuration key 'dicomweb_source.url': {exc}") from None


@dataclasses.dataclass(frozen=True)
class DeliverSettings:
    """Results sent back to the PACS (``jobs/deliver.py``, and the nightly flow's last step); see docs/deliver.md."""

    destinations: list[str] = setting(
        factory=list,
        doc="each AE_TITLE@HOST:PORT (C-STORE), dicomweb:URL (STOW-RS to a DICOMweb service's root, e.g. "
        "dicomweb:https://pacs.example/dicom-web) or folder:DIR (outside the lake); empty: deliver needs --to or "
        "--to-folder, and the nightly flow does not deliver",
    )
    secondary_capture: bool = setting(False, "also a picture with the heatmap burnt in, for viewers without SR")
    sc_without_call: str = setting(
        "notice",
        "with secondary_capture, a film with no finding called: an SC that says so, with no heatmap (notice), or "
        "no SC (none)",
        choices=("notice", "none"),
    )
    uid_root: str = setting("", "the organisation's UID root for result objects; empty: UUID-derived 2.25 UIDs")
    ae_title: str = setting("XRAY_SPARK", "the calling AE title")
    timeout_seconds: float = setting(60.0, "connection, association and each C-STORE", gt=0)
    max_side: int = setting(1024, "the Secondary Capture's longest side, px", ge=64)
    dicomweb_auth_file: str = setting(
        "",
        "a file outside the lake with a DICOMweb destination's credentials, one line: 'Bearer <token>' or "
        "'Basic <user>:<password>'; empty: none",
        path=True,
    )
    tls_ca_file: str = setting(
        "",
        "the certificate authorities (PEM) a destination's TLS certificate is checked against; empty: the system's",
        path=True,
    )
    tls_cert: str = setting(
        "", "delivery's own certificate (PEM), shown to a PACS that asks for one (tls:AE@HOST:PORT)", path=True
    )
    tls_key: str = setting("", "its PEM key, outside the lake", path=True)
    batch_size: int = setting(32, "films per Arrow batch when the objects are built on the executors", ge=1)
    record_every: int = setting(50, "films between two appends to xray.deliveries", ge=1)
    give_up_after_attempts: int = setting(
        3, "a film whose source file is gone or changed this many runs running is given up", ge=1
    )
    retry_days: float = setting(
        7.0,
        "a film not delivered is tried again each run for this many days after its first try, then given up with "
        "the reason (and no longer fails a night)",
        gt=0,
    )

    def check(self) -> None:
        from xray_spark.destinations import parse_destination
        from xray_spark.errors import UsageError
        from xray_spark.uids import check_root

        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("configuration keys 'deliver.tls_cert' and 'deliver.tls_key' go together")
        for i, text in enumerate(self.destinations):
            try:
                parse_destination(text)
            except UsageError as exc:
                raise ConfigError(f"configuration key 'deliver.destinations[{i}]': {exc}") from None
        try:
            check_root(self.uid_root)
        except ValueError as exc:
            raise ConfigError(f"configuration key 'deliver.uid_root': {exc}") from None
        _ae_title(self.ae_title, "deliver.ae_title")


@dataclasses.dataclass(frozen=True)
class WorklistSettings:
    viewer_url: str = setting(
        "",
        "a link from each worklist film to its study in the PACS viewer, with {study_uid}, {accession} or "
        "{orthanc_study}, e.g. https://pacs.example/viewer?StudyInstanceUIDs={study_uid}; empty: no link",
    )
    viewer_lookup: str = setting(
        "", "with {orthanc_study}: the Orthanc the web app asks for the study's id (its REST address)"
    )
    viewer_lookup_auth: str = setting("", "a file holding user:password for viewer_lookup, outside the lake", path=True)

    def check(self) -> None:
        url = self.viewer_url
        if not url:
            return
        try:
            url.format(study_uid="", accession="", orthanc_study="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "configuration key 'worklist.viewer_url' may name only {study_uid}, {accession} and {orthanc_study} "
                f"({exc!r})"
            ) from None
        if not url.startswith(("https://", "http://")):
            raise ConfigError("configuration key 'worklist.viewer_url' must be an http:// or https:// URL")
        if "{orthanc_study}" in url and not self.viewer_lookup.startswith(("https://", "http://")):
            raise ConfigError(
                "configuration key 'worklist.viewer_url' names {orthanc_study}: set 'worklist.viewer_lookup' to the "
                "Orthanc the app asks for it (e.g. https://pacs.example:8042)"
            )


@dataclasses.dataclass(frozen=True)
class WebSettings:
    """The readers' web app (``python -m xray_spark.web``); see docs/web.md."""

    host: str = setting("127.0.0.1", "another address needs tls_cert and tls_key")
    port: int = setting(8470, "a TCP port", ge=1, le=65535)
    accounts: str = setting(
        "web/accounts.sqlite", "scrypt hashes, sessions, the cookie key: outside the lake", path=True
    )
    verdicts: str = setting(
        "", "SQLite (WAL) on the app's local disk; empty: <lake>/verdicts/verdicts.sqlite", path=True
    )
    tls_cert: str = setting("", "a PEM file: the app serves HTTPS and its cookies are Secure", path=True)
    tls_key: str = setting("", "its PEM key", path=True)
    session_hours: float = setting(12.0, "a session's life", gt=0)
    signin_free_failures: int = setting(
        3, "failed sign-ins (per name and address) before each next one waits", ge=1, le=100
    )
    signin_max_delay_seconds: float = setting(900.0, "the wait doubles per failure up to this", ge=1)
    threads: int = setting(16, "request threads", ge=1, le=256)
    films_per_page: int = setting(100, "films per page", ge=1, le=1000)
    display_max_side: int = setting(
        1024,
        "prepare keeps each film as a display picture (JPEG) of at most this long side, for the app's large view; "
        "0: none",
        ge=0,
        le=4096,
    )
    display_quality: int = setting(90, "the display pictures' JPEG quality", ge=50, le=100)
    timezone: str = setting("", "the zone of the worklists' days (IANA name, e.g. Europe/Berlin); empty: the machine's")

    def check(self) -> None:
        if not self.accounts:
            raise ConfigError("configuration key 'web.accounts' must name a file outside the lake")
        if self.timezone:
            import zoneinfo

            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ConfigError(
                    f"configuration key 'web.timezone' is {self.timezone!r}, not a time zone: use an IANA name such "
                    "as Europe/Berlin, or leave it empty for the machine's"
                ) from None
