"""TLS contexts for DICOM over TLS (PS3.15 Annex B, BCP 195): the node's as a server, delivery's as a client.

Certificates and keys are PEM files outside the lake. The node with ``dicom_node.tls_ca_file``
asks each sender for a certificate that authority signed (mutual authentication) and refuses the
association's connection without one; delivery checks the PACS's certificate (and its name or
address) against ``deliver.tls_ca_file`` or the system's authorities, and shows its own
(``deliver.tls_cert``) when the PACS asks. TLS 1.2 at least.
"""

from __future__ import annotations

import ssl

from xray_spark.errors import ConfigError


def _load_chain(context: ssl.SSLContext, cert: str, key: str, setting: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}_cert / {setting}_key: cannot load them ({exc})") from None


def _load_authorities(context: ssl.SSLContext, ca_file: str, setting: str) -> None:
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{setting}_ca_file {ca_file}: cannot load it ({exc})") from None


def server_context(cert: str, key: str, ca_file: str, setting: str = "dicom_node.tls") -> ssl.SSLContext:
    """The node's context: its certificate and key; with ``ca_file``, a client certificate it signed is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, setting)
    if ca_file:
        _load_authorities(context, ca_file, setting)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: str, cert: str = "", key: str = "", setting: str = "deliver.tls") -> ssl.SSLContext:
    """Delivery's context: the peer's certificate and name checked against ``ca_file`` (empty: the system's
    authorities); its own certificate shown when ``cert`` is given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _load_authorities(context, ca_file, setting)
    if cert:
        _load_chain(context, cert, key, setting)
    return context


class HandshakeInThread:
    """A server context whose sockets shake hands on their first read, in the association's own thread.

    pynetdicom wraps each accepted socket in its one accepting thread; a handshake there would let one
    peer that connects and sends nothing hold every other sender off. The peer's address is checked
    first (the node's gate), then the handshake is bounded by the node's PDU timeout like any read."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock, server_side: bool = True):
        return self.context.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=False)
