"""python -m xray_spark.systemd install|show: the services and the nightly flow as systemd units.

    python -m xray_spark.systemd install --config /etc/xray-spark/site.yaml [--user] [--dir DIR]
        [--home /var/lib/xray-spark] [--account xray-spark] [--at 02:00] [--nightly-args "..."]
    python -m xray_spark.systemd show --config FILE [--user] ...     # print them, write nothing

Five units, each running this installation's own interpreter with the one configuration file:

* ``xray-spark-dicom-node.service``, ``xray-spark-web.service``, ``xray-spark-sql-server.service``:
  the service in the foreground (``run``), stopped by systemd's SIGTERM (each lets its work in
  flight finish), restarted when it fails;
* ``xray-spark-nightly.service`` (oneshot) and ``xray-spark-nightly.timer``: the nightly flow on
  the DICOM node's spool at ``--at``, a missed night run at the next boot (``Persistent=``).

Every unit runs in ``/`` with ``XRAY_SPARK_HOME`` set (the product's home, docs/configuration.md),
so no path can depend on a working directory. System units run as ``--account`` with
``StateDirectory=xray-spark`` (``/var/lib/xray-spark``, made by systemd); ``--user`` units run as
the user who installs them, home under ``~/.local/share/xray-spark``. ``install`` writes the
files to ``--dir`` (default ``/etc/systemd/system``, or ``~/.config/systemd/user``) and prints
the ``systemctl`` lines that enable them; it enables nothing itself.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from xray_spark.errors import UsageError

PREFIX = "xray-spark"
#: unit name -> (description, module, its arguments before --config)
SERVICES = {
    "dicom-node": ("the DICOM storage node a PACS sends studies to", "xray_spark.node", ["run"]),
    "web": ("the worklist web app readers sign in to", "xray_spark.web", ["run"]),
    "sql-server": ("the read-only SQL server (JDBC/ODBC) over the lake", "xray_spark.server", ["run"]),
}
SYSTEM_DIR = "/etc/systemd/system"
SYSTEM_HOME = "/var/lib/xray-spark"


def _quote(word: str) -> str:
    """A word of a unit's command line: systemd's quoting is a shell's for what we write (no $, no %)."""
    if "%" in word or "$" in word:
        raise UsageError(f"{word!r}: a path with % or $ cannot go into a systemd unit as it is; rename it")
    return shlex.quote(word)


def _exec(words: list[str]) -> str:
    return " ".join(_quote(w) for w in words)


def _service_section(
    description: str, command: list[str], *, home: str, account: str | None, user: bool, oneshot: bool
) -> str:
    lines = [
        "[Unit]",
        f"Description=xray-spark: {description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot" if oneshot else "Type=simple",
        f"ExecStart={_exec(command)}",
        "WorkingDirectory=/",
        f"Environment={_quote('XRAY_SPARK_HOME=' + home)}",
        "Environment=PYTHONUNBUFFERED=1",
        "UMask=0077",
    ]
    if not user:
        lines += [f"User={account}", "StateDirectory=xray-spark", "StateDirectoryMode=0700", "NoNewPrivileges=yes"]
        lines += ["PrivateTmp=yes", "ProtectHome=read-only"]
    if oneshot:  # started by its timer; a night that fails leaves the unit failed (systemctl status says why)
        lines += ["TimeoutStartSec=12h"]
    else:
        lines += ["Restart=on-failure", "RestartSec=10", "TimeoutStopSec=120", "KillMode=mixed"]
        lines += ["", "[Install]", "WantedBy=default.target" if user else "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"


def launcher(python: str = sys.executable) -> list[str]:
    """The ``xray-spark`` launcher beside ``python`` (its venv's), else the launcher module run by ``python``."""
    script = Path(python).parent / "xray-spark"
    return [str(script)] if script.is_file() else [python, "-m", "xray_spark.launch"]


def units(
    conf: str,
    *,
    user: bool,
    home: str,
    account: str | None = "xray-spark",
    at: str = "02:00",
    nightly_args: list[str] | None = None,
    python: str = sys.executable,
) -> dict[str, str]:
    """File name -> content of each unit (see the module's description)."""
    conf = os.path.abspath(conf)
    out = {}
    for name, (description, module, args) in SERVICES.items():
        command = [python, "-m", module, *args, "--config", conf]
        out[f"{PREFIX}-{name}.service"] = _service_section(
            description, command, home=home, account=account, user=user, oneshot=False
        )
    nightly = [*launcher(python), "nightly", "--config", conf]
    nightly += nightly_args if nightly_args is not None else ["--source", "dicom"]
    out[f"{PREFIX}-nightly.service"] = _service_section(
        "tonight's studies ingested, scored, monitored, on the worklist and delivered",
        nightly,
        home=home,
        account=account,
        user=user,
        oneshot=True,
    )
    out[f"{PREFIX}-nightly.timer"] = "\n".join(
        [
            "[Unit]",
            "Description=xray-spark: the nightly flow, every night",
            "",
            "[Timer]",
            f"OnCalendar=*-*-* {at}:00",
            "Persistent=true",
            f"Unit={PREFIX}-nightly.service",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return out


def _arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xray_spark.systemd", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["install", "show"])
    parser.add_argument(
        "--config", "--conf", dest="conf", required=True, help="the configuration file every unit runs with"
    )
    parser.add_argument("--user", action="store_true", help="user units (systemctl --user), run as you")
    parser.add_argument("--dir", help=f"where to write them (default {SYSTEM_DIR}, or ~/.config/systemd/user)")
    parser.add_argument("--home", help=f"XRAY_SPARK_HOME of the units (default {SYSTEM_HOME}, or yours)")
    parser.add_argument("--account", default="xray-spark", help="system units: the account they run as")
    parser.add_argument("--at", default="02:00", help="the nightly flow's time, HH:MM (default 02:00)")
    parser.add_argument(
        "--nightly-args", default="--source dicom", help='the nightly job\'s arguments (default "--source dicom")'
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _arg_parser().parse_args(argv)
    if not Path(args.conf).is_file():
        print(f"systemd: error: configuration file {args.conf} does not exist", file=sys.stderr)
        return 2
    from xray_spark.config import places

    home = args.home or (str(places.home()) if args.user else SYSTEM_HOME)
    folder = Path(args.dir or (Path.home() / ".config/systemd/user" if args.user else SYSTEM_DIR))
    try:
        written = units(
            args.conf,
            user=args.user,
            home=os.path.abspath(home),
            account=None if args.user else args.account,
            at=args.at,
            nightly_args=shlex.split(args.nightly_args),
        )
    except UsageError as exc:
        print(f"systemd: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "show":
        for name, text in written.items():
            print(f"# {name}\n{text}")
        return 0
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in written.items():
        (folder / name).write_text(text, encoding="utf-8")
        print(folder / name)
    ctl = "systemctl --user" if args.user else "systemctl"
    print(
        f"written; now: {ctl} daemon-reload && {ctl} enable --now {PREFIX}-dicom-node.service "
        f"{PREFIX}-web.service {PREFIX}-sql-server.service {PREFIX}-nightly.timer",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
