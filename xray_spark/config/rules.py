"""The rules that join keys of different sections (a section's own rules are its ``check()``)."""

from __future__ import annotations

from typing import Any

from xray_spark.errors import ConfigError

#: ``xray_spark.config.Settings`` (not imported: config imports this module).
Settings = Any


def check_across(settings: Settings) -> None:
    """HiveServer2 settings through ``spark.conf`` would skip ``sql_server``'s loopback and authentication check."""
    for key in settings.spark.conf:
        if "hive.server2." in key:
            raise ConfigError(
                f"configuration key 'spark.conf.{key}': HiveServer2 settings go in sql_server.* and "
                "sql_server.hive_conf, where the loopback and authentication check sees them"
            )
    _outside_the_lake(settings)


def _outside_the_lake(settings: Settings) -> None:
    """Files that carry identity or secrets are refused inside the lake, whose every byte is free of both."""
    from xray_spark.lake import is_inside

    for key, value in (
        ("audit.file", settings.audit.file),
        ("deliver.dicomweb_auth_file", settings.deliver.dicomweb_auth_file),
        ("dicomweb_source.auth_file", settings.dicomweb_source.auth_file),
        ("deliver.tls_key", settings.deliver.tls_key),
        ("dicom_node.tls_key", settings.dicom_node.tls_key),
    ):
        if value and is_inside(value, settings.lake):
            raise ConfigError(f"configuration key '{key}' must name a file outside the lake ({settings.lake})")
