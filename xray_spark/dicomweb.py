"""What the DICOMweb destination (STOW-RS) and the DICOMweb source (QIDO-RS, WADO-RS) share: credentials from a
private file outside the lake, an HTTP session that sends them and checks certificates, and the client.

A credentials file holds one line, the HTTP authentication scheme and its value: ``Bearer <token>`` or
``Basic <user>:<password>``. It must be readable by its owner only; an error names the file and the setting,
never what the file holds.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from xray_spark.errors import ConfigError, UsageError


def service_url(text: str, setting: str) -> str:
    """A DICOMweb service's root URL (http or https, a host, no query or credentials), without its trailing slash."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UsageError(f"DICOMweb address {text!r} is not an http(s) URL of a service root (no query)")
    if parts.username or parts.password:
        raise UsageError(f"DICOMweb address {parts.hostname}: credentials belong in {setting}, not in the URL")
    return url


def read_credentials(path: str, setting: str) -> tuple[str, str] | None:
    """``(scheme, value)`` from the credentials file at ``path`` (``setting`` names it in errors); None without one."""
    if not path:
        return None
    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as fh:
            line = fh.read().strip()
    except OSError as exc:
        raise ConfigError(f"{setting} {path}: cannot read it ({exc.strerror})") from None
    if mode & 0o077:
        raise ConfigError(f"{setting} {path} is readable by others: chmod 600 it")
    scheme, _, value = line.partition(" ")
    if scheme.lower() not in ("bearer", "basic") or not value.strip() or "\n" in line:
        raise ConfigError(f"{setting} {path}: expected one line, 'Bearer <token>' or 'Basic <user>:<password>'")
    if scheme.lower() == "basic" and ":" not in value:
        raise ConfigError(f"{setting} {path}: Basic needs '<user>:<password>'")
    return scheme.lower(), value.strip()


def http_session(credentials: tuple[str, str] | None, ca_file: str):
    """A requests session that sends ``credentials`` (None: anonymous) and checks HTTPS certificates against
    ``ca_file`` (empty: the system's authorities)."""
    import requests

    session = requests.Session()
    session.verify = ca_file or True
    if credentials is not None:
        scheme, value = credentials
        if scheme == "bearer":
            session.headers["Authorization"] = f"Bearer {value}"
        else:
            user, _, password = value.partition(":")
            session.auth = (user, password)
    return session


def client(url: str, session, timeout_s: float):
    """dicomweb-client's client of the service at ``url`` over ``session``: no retries of its own (a night that
    misses an object tries it again the next night)."""
    from dicomweb_client.api import DICOMwebClient

    made = DICOMwebClient(url, session=session, timeout=timeout_s)
    made.set_http_retry_params(retry=False)  # its default: 5 tries, 1 s to 16 s apart, on any exception
    return made
