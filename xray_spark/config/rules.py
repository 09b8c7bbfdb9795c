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
