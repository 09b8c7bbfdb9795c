"""Cross-field rules of the configuration that types alone cannot express (called by ``load_settings``)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from xray_spark.errors import ConfigError
from xray_spark.labels import FINDINGS
from xray_spark.models import MODELS

#: ``xray_spark.config.Settings`` (not imported: config imports this module).
Settings = Any

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


def check_settings(settings: Settings) -> None:
    """Cross-field rules that types alone cannot express."""
    split = settings.split
    for name in ("train", "val", "test"):
        if not 0.0 <= getattr(split, name) <= 1.0:
            raise ConfigError(f"configuration key 'split.{name}' must lie in [0, 1], got {getattr(split, name)}")
    total = split.train + split.val + split.test
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"split.train + split.val + split.test must be 1, got {total:g} "
            f"({split.train:g} + {split.val:g} + {split.test:g})"
        )
    if settings.image.size < 8 or settings.image.size > 4096:
        raise ConfigError(f"configuration key 'image.size' must lie in [8, 4096], got {settings.image.size}")
    for name in ("max_pixels", "max_decoded_bytes", "max_file_bytes", "min_side"):
        if getattr(settings.image, name) <= 0:
            raise ConfigError(f"configuration key 'image.{name}' must be positive")
    if settings.locks.wait_seconds < 0:
        raise ConfigError("configuration key 'locks.wait_seconds' must be >= 0")
    if not 0.0 <= settings.quarantine.max_fraction <= 1.0:
        raise ConfigError(
            f"configuration key 'quarantine.max_fraction' must lie in [0, 1], got {settings.quarantine.max_fraction}"
        )
    if settings.labels.min_cases < 0:
        raise ConfigError("configuration key 'labels.min_cases' must be >= 0")
    unknown = [f for f in settings.labels.findings if f not in FINDINGS]
    if unknown:
        raise ConfigError(
            f"configuration key 'labels.findings' names unknown findings {unknown}; known: {', '.join(FINDINGS)}"
        )
    if not settings.labels.findings:
        raise ConfigError("configuration key 'labels.findings' must name at least one finding")
    if len(set(settings.labels.findings)) != len(settings.labels.findings):
        raise ConfigError("configuration key 'labels.findings' lists a finding twice")
    if settings.prepare.images_per_file <= 0:
        raise ConfigError("configuration key 'prepare.images_per_file' must be positive")
    train = settings.train
    if train.model not in MODELS:
        raise ConfigError(
            f"configuration key 'train.model' must be {', '.join(MODELS[:-1])} or {MODELS[-1]}, got {train.model!r}"
        )
    if train.loss not in ("weighted_bce", "bce", "focal"):
        raise ConfigError(f"configuration key 'train.loss' must be weighted_bce, bce or focal, got {train.loss!r}")
    for name in ("epochs", "batch_size", "num_workers"):
        if getattr(train, name) < 1:
            raise ConfigError(f"configuration key 'train.{name}' must be at least 1")
    if train.learning_rate <= 0:
        raise ConfigError("configuration key 'train.learning_rate' must be positive")
    if train.verdicts_min_readers < 1 or train.verdicts_min_readers_over_csv < 0:
        raise ConfigError(
            "configuration keys 'train.verdicts_min_readers' must be at least 1, 'train.verdicts_min_readers_over_csv' "
            "at least 0"
        )
    if train.verdicts_flagged not in ("refuse", "exclude", "include"):
        raise ConfigError(
            "configuration key 'train.verdicts_flagged' must be refuse, exclude or include, "
            f"got {train.verdicts_flagged!r}"
        )
    _check_operating(settings)
    _check_sql_server(settings)
    _check_dicom_node(settings)
    _check_deliver(settings)
    _check_web(settings)
    _check_monitor(settings)
    _check_promotion(settings)
    _check_spark(settings)
    if not 1 <= settings.score.batch_size <= 4096:
        raise ConfigError(
            f"configuration key 'score.batch_size' must lie in [1, 4096], got {settings.score.batch_size}"
        )
    name = settings.dataset
    if not name or not name.replace("-", "").replace("_", "").isalnum() or not name[0].isalnum():
        raise ConfigError(
            "configuration key 'dataset' must be a simple name (letters, digits, - and _, "
            f"starting with a letter or digit), got {settings.dataset!r}"
        )


def _check_operating(settings: Settings) -> None:
    """``thresholds.*`` and ``score.urgency``: known findings, rules that parse, urgencies in [0, 1]."""
    from xray_spark.operating import parse_rule

    t = settings.thresholds
    for key, rule in [("thresholds.rule", t.rule)] + [
        (f"thresholds.per_finding.{k}", v) for k, v in t.per_finding.items()
    ]:
        try:
            parse_rule(rule)
        except ValueError as exc:
            raise ConfigError(f"configuration key {key!r}: {exc}") from None
    from xray_spark.heatmap_choice import parse_heatmap_choice

    try:
        parse_heatmap_choice(settings.score.heatmaps)
    except ValueError as exc:
        raise ConfigError(f"configuration key 'score.heatmaps': {exc}") from None
    if t.min_positives < 1:
        raise ConfigError("configuration key 'thresholds.min_positives' must be at least 1")
    for key, names in (("thresholds.per_finding", t.per_finding), ("score.urgency", settings.score.urgency)):
        unknown = sorted(set(names) - set(FINDINGS))
        if unknown:
            raise ConfigError(
                f"configuration key {key!r} names unknown findings {unknown}; known: {', '.join(FINDINGS)}"
            )
    bad = {k: v for k, v in settings.score.urgency.items() if not 0.0 <= v <= 1.0}
    if bad:
        raise ConfigError(f"configuration key 'score.urgency' must give each finding a weight in [0, 1], got {bad}")


#: A JVM memory size as Spark takes it: a positive whole number with an optional unit.
MEMORY_SIZE = re.compile(r"^[1-9][0-9]*[kmgtp]?b?$", re.IGNORECASE)
#: ``spark.conf`` keys whose values are whole numbers of at least 1 (a count of partitions, cores, executors).
SPARK_COUNTS = (
    "spark.sql.shuffle.partitions",
    "spark.default.parallelism",
    "spark.executor.cores",
    "spark.executor.instances",
    "spark.cores.max",
    "spark.task.cpus",
    "spark.sql.files.maxPartitionNum",
)
#: ``spark.conf`` keys whose values are memory sizes.
SPARK_SIZES = (
    "spark.driver.memory",
    "spark.executor.memory",
    "spark.executor.memoryOverhead",
    "spark.driver.maxResultSize",
)


def _check_spark(settings: Settings) -> None:
    """The Spark settings a typo would make Spark fail on (with a JVM traceback), refused before it starts."""
    spark = settings.spark
    if not MEMORY_SIZE.match(spark.driver_memory.strip()):
        raise ConfigError(
            f"configuration key 'spark.driver_memory' must be a positive memory size such as 4g or 512m, "
            f"got {spark.driver_memory!r}"
        )
    if spark.shuffle_partitions < 1:
        raise ConfigError(
            f"configuration key 'spark.shuffle_partitions' must be at least 1, got {spark.shuffle_partitions}"
        )
    for key, value in spark.conf.items():
        if key in SPARK_COUNTS and not (value.strip().isdigit() and int(value) >= 1):
            raise ConfigError(
                f"configuration key 'spark.conf.{key}' must be a whole number of at least 1, got {value!r}"
            )
        if key in SPARK_SIZES and not (
            MEMORY_SIZE.match(value.strip()) or (key == "spark.driver.maxResultSize" and value.strip() == "0")
        ):
            raise ConfigError(
                f"configuration key 'spark.conf.{key}' must be a positive memory size such as 4g or 512m, got {value!r}"
            )


def _check_sql_server(settings: Settings) -> None:
    server = settings.sql_server
    if server.authentication not in AUTHENTICATIONS:
        raise ConfigError(
            f"configuration key 'sql_server.authentication' must be one of {', '.join(AUTHENTICATIONS)}, "
            f"got {server.authentication!r}"
        )
    if not 0 < server.port < 65536:
        raise ConfigError(f"configuration key 'sql_server.port' must be a TCP port, got {server.port}")
    if not 0 < server.refresh_seconds <= 3600:
        raise ConfigError(
            f"configuration key 'sql_server.refresh_seconds' must lie in (0, 3600], got {server.refresh_seconds}"
        )
    if not 1 <= server.statement_timeout_seconds <= 86400:
        raise ConfigError(
            "configuration key 'sql_server.statement_timeout_seconds' must lie in [1, 86400], "
            f"got {server.statement_timeout_seconds}"
        )
    if not 1 <= server.max_result_mb <= 65536:
        raise ConfigError(
            f"configuration key 'sql_server.max_result_mb' must lie in [1, 65536], got {server.max_result_mb}"
        )
    for key in server.hive_conf:
        owner = OWNED_HIVE_KEYS.get(key)
        if owner is not None:
            raise ConfigError(
                f"configuration key 'sql_server.hive_conf.{key}' is set by '{owner}': set that instead "
                "(it goes through the loopback and authentication check)"
            )
    for key in settings.spark.conf:
        if "hive.server2." in key:
            raise ConfigError(
                f"configuration key 'spark.conf.{key}': HiveServer2 settings go in sql_server.* and "
                "sql_server.hive_conf, where the loopback and authentication check sees them"
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


def _check_dicom_node(settings: Settings) -> None:
    """``dicom_node.*``: AE titles, the allow-list, ports, sizes and timeouts."""
    node = settings.dicom_node
    _ae_title(node.ae_title, "dicom_node.ae_title")
    parse_allow(node.allow)
    if not 0 < node.port < 65536:
        raise ConfigError(f"configuration key 'dicom_node.port' must be a TCP port, got {node.port}")
    if node.max_associations < 1:
        raise ConfigError("configuration key 'dicom_node.max_associations' must be at least 1")
    if not 1 <= node.max_associations_per_address <= node.max_associations:
        raise ConfigError(
            "configuration key 'dicom_node.max_associations_per_address' must lie in [1, dicom_node.max_associations]"
        )
    if not 4096 <= node.max_pdu <= 16 << 20:
        raise ConfigError("configuration key 'dicom_node.max_pdu' must lie in [4096, 16777216] bytes")
    for name in ("acse", "dimse", "network", "stop", "pdu", "association"):
        if getattr(node, f"{name}_timeout_seconds") <= 0:
            raise ConfigError(f"configuration key 'dicom_node.{name}_timeout_seconds' must be positive")
    if node.after_ingest not in ("keep", "done"):
        raise ConfigError(
            f"configuration key 'dicom_node.after_ingest' must be keep or done, got {node.after_ingest!r}"
        )


def _check_deliver(settings: Settings) -> None:
    """``deliver.*`` and ``worklist.viewer_url``: destinations that parse, a usable UID root, sizes."""
    from xray_spark.destinations import parse_destination
    from xray_spark.errors import UsageError
    from xray_spark.uids import check_root

    options = settings.deliver
    for i, text in enumerate(options.destinations):
        try:
            parse_destination(text)
        except UsageError as exc:
            raise ConfigError(f"configuration key 'deliver.destinations[{i}]': {exc}") from None
    try:
        check_root(options.uid_root)
    except ValueError as exc:
        raise ConfigError(f"configuration key 'deliver.uid_root': {exc}") from None
    _ae_title(options.ae_title, "deliver.ae_title")
    for key, value, low in (
        ("max_side", options.max_side, 64),
        ("batch_size", options.batch_size, 1),
        ("record_every", options.record_every, 1),
        ("give_up_after_attempts", options.give_up_after_attempts, 1),
    ):
        if value < low:
            raise ConfigError(f"configuration key 'deliver.{key}' must be at least {low}, got {value}")
    if options.timeout_seconds <= 0:
        raise ConfigError("configuration key 'deliver.timeout_seconds' must be positive")
    url = settings.worklist.viewer_url
    if url:
        try:
            url.format(study_uid="", accession="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"configuration key 'worklist.viewer_url' may name only {{study_uid}} and {{accession}} ({exc!r})"
            ) from None
        if not url.startswith(("https://", "http://")):
            raise ConfigError("configuration key 'worklist.viewer_url' must be an http:// or https:// URL")


def _check_web(settings: Settings) -> None:
    """``web.*`` in range."""
    web = settings.web
    if not 1 <= web.port <= 65535:
        raise ConfigError(f"configuration key 'web.port' must be a TCP port (1-65535), got {web.port}")
    for key, value, low, high in (
        ("threads", web.threads, 1, 256),
        ("films_per_page", web.films_per_page, 1, 1000),
        ("signin_free_failures", web.signin_free_failures, 1, 100),
    ):
        if not low <= value <= high:
            raise ConfigError(f"configuration key 'web.{key}' must be in [{low}, {high}], got {value}")
    if web.session_hours <= 0 or web.signin_max_delay_seconds < 1:
        raise ConfigError("configuration keys 'web.session_hours' and 'web.signin_max_delay_seconds' must be positive")
    if not web.accounts:
        raise ConfigError("configuration key 'web.accounts' must name a file outside the lake")


def parse_reference(text: str) -> tuple[str, int]:
    """``monitor.reference``: ``nights:N`` (N >= 1) -> ("nights", N), ``validation`` -> ("validation", 0)."""
    kind, _, n = str(text).strip().partition(":")
    if kind == "validation" and not n:
        return "validation", 0
    if kind == "nights" and n.isdigit() and int(n) >= 1:
        return "nights", int(n)
    raise ConfigError(
        f"configuration key 'monitor.reference' must be nights:N (N >= 1, e.g. nights:7) or validation, got {text!r}"
    )


def _check_promotion(settings: Settings) -> None:
    """``promotion.*`` in range, its droppable findings known."""
    rule = settings.promotion
    for name in ("level", "power"):
        if not 0 < getattr(rule, name) < 1:
            raise ConfigError(f"configuration key 'promotion.{name}' must lie in (0, 1), got {getattr(rule, name)}")
    if not 0 <= rule.assumed_correlation < 1:
        raise ConfigError(
            f"configuration key 'promotion.assumed_correlation' must lie in [0, 1), got {rule.assumed_correlation}"
        )
    if not 0 < rule.non_inferiority_margin < 1:
        raise ConfigError("configuration key 'promotion.non_inferiority_margin' must lie in (0, 1)")
    unknown = [f for f in rule.may_drop if f not in FINDINGS]
    if unknown:
        raise ConfigError(f"configuration key 'promotion.may_drop' names unknown findings {unknown}")


def _check_monitor(settings: Settings) -> None:
    """``monitor.*`` in range."""
    parse_reference(settings.monitor.reference)
    if not 0 < settings.monitor.alpha < 1:
        raise ConfigError(f"configuration key 'monitor.alpha' must lie in (0, 1), got {settings.monitor.alpha}")
    if settings.monitor.min_films < 1:
        raise ConfigError("configuration key 'monitor.min_films' must be at least 1")
