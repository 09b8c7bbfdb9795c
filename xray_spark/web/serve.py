"""Where the web app listens and how: cheroot's threaded WSGI server, HTTPS when TLS files are set.

A non-loopback address is refused unless the app serves HTTPS itself (``web.tls_cert`` and
``web.tls_key``): a password or a session cookie must never cross a network in clear text.
Behind a reverse proxy that does TLS, keep the app on 127.0.0.1 and let the proxy face the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from xray_spark.config import Settings
from xray_spark.errors import UsageError
from xray_spark.lake import Lake, is_inside, local_path
from xray_spark.net import is_loopback


def check_bind(settings: Settings) -> None:
    web = settings.web
    if bool(web.tls_cert) != bool(web.tls_key):
        raise UsageError("web.tls_cert and web.tls_key go together: set both (PEM files) or neither")
    for path in (web.tls_cert, web.tls_key):
        if path and not os.path.isfile(path):
            raise UsageError(f"the TLS file {path} does not exist")
    if not is_loopback(web.host) and not web.tls_cert:
        raise UsageError(
            f"refusing to serve on {web.host} without TLS: passwords and session cookies would cross the network in "
            "clear text. Set web.tls_cert and web.tls_key, or keep web.host at 127.0.0.1 behind a TLS reverse proxy"
        )


def lake_root(settings: Settings) -> str:
    root = local_path(settings.lake)
    if root is None:
        raise UsageError(f"the web app reads a lake on local disk (or a mounted one), not {settings.lake}")
    if not os.path.isdir(root):
        raise UsageError(f"no lake at {root}: run the pipeline first (make demo)")
    return os.path.abspath(root)


def accounts_path(settings: Settings) -> str:
    path = os.path.abspath(settings.web.accounts)
    if is_inside(path, lake_root(settings)):
        raise UsageError(f"web.accounts ({path}) is inside the lake: password hashes and sessions stay outside it")
    return path


def verdicts_path(settings: Settings) -> str:
    return os.path.abspath(settings.web.verdicts or os.path.join(lake_root(settings), "verdicts", "verdicts.sqlite"))


def build_app(settings: Settings):
    from xray_spark.audit import trail
    from xray_spark.pages.lake_view import LakeView
    from xray_spark.web.accounts import Accounts
    from xray_spark.web.app import create_app
    from xray_spark.web.verdicts import VerdictStore

    web = settings.web
    auth = settings.worklist.viewer_lookup_auth
    if auth and is_inside(os.path.abspath(auth), lake_root(settings)):
        raise UsageError(f"worklist.viewer_lookup_auth ({auth}) is inside the lake: a password stays outside it")
    accounts = Accounts(
        accounts_path(settings), free_failures=web.signin_free_failures, max_delay=web.signin_max_delay_seconds
    )
    return create_app(
        web,
        LakeView(Lake.at(lake_root(settings))),
        accounts,
        VerdictStore(verdicts_path(settings)),
        tls=bool(web.tls_cert),
        worklist=settings.worklist,
        audit=trail(settings),
    )


#: The listen backlog: connections the kernel holds while every thread is busy.
LISTEN_BACKLOG = 256


def serve(settings: Settings, stopping: threading.Event, ready: Callable[[], None]) -> None:
    """Serve until ``stopping`` is set; ``ready`` is called once the socket listens."""
    from cheroot import wsgi

    web = settings.web
    server = wsgi.Server((web.host, web.port), build_app(settings), numthreads=web.threads, server_name="xray-spark")
    # Connections waiting for a thread: cheroot's default listen backlog (5) reset a third of 50 posts at once.
    server.request_queue_size = LISTEN_BACKLOG
    if web.tls_cert:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(web.tls_cert, web.tls_key)
    server.prepare()  # binds and listens
    ready()
    worker = threading.Thread(target=server.serve, daemon=True)
    worker.start()
    stopping.wait()
    server.stop()
    worker.join(timeout=30)
