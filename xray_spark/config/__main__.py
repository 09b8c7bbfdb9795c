"""``python -m xray_spark.config [--config FILE] [--set K=V ...] [--get KEY | --json-schema]``: resolved settings."""

from __future__ import annotations

import argparse
import json
import sys

from xray_spark.config import Settings, _get, load_settings
from xray_spark.config.schema import json_schema
from xray_spark.errors import ConfigError

parser = argparse.ArgumentParser(prog="python -m xray_spark.config", description="print resolved configuration")
parser.add_argument("--config", "--conf", dest="conf", metavar="FILE", help="configuration file (YAML)")
parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
parser.add_argument("--get", metavar="KEY", help="print one value (e.g. spark.master); default: all as JSON")
parser.add_argument("--json-schema", action="store_true", help="print the settings' JSON Schema (for editors)")
args = parser.parse_args()
if args.json_schema:
    print(json.dumps(json_schema(Settings), indent=2))
    sys.exit(0)
try:
    resolved = load_settings(args.conf, args.overrides)
    value = _get(resolved, args.get) if args.get else resolved.to_dict()
except ConfigError as exc:
    print(f"config: error: {exc}", file=sys.stderr)
    sys.exit(2)
print(value if isinstance(value, str | int | float) else json.dumps(value, indent=2, sort_keys=True))
