"""Who may send to the node: calling AE titles, each from its address; a node beyond loopback needs the list."""

from __future__ import annotations

import ipaddress

from xray_spark.config import DicomNodeSettings
from xray_spark.config.services import parse_allow
from xray_spark.errors import UsageError
from xray_spark.net import is_loopback

__all__ = ["check_bind", "parse_allow", "refusal"]


def check_bind(node: DicomNodeSettings) -> None:
    """A node on any address but loopback is refused without an allow-list of AE titles and addresses."""
    if not is_loopback(node.host) and not node.allow:
        raise UsageError(
            f"refusing to listen on {node.host} without dicom_node.allow: anyone who reaches that address could "
            "store files on this machine; list the senders as --allow AE_TITLE@ADDRESS, or keep 127.0.0.1"
        )


def refusal(allowed: dict[str, set[str]], calling_ae: str, address: str) -> str | None:
    """Why an association from ``calling_ae`` at ``address`` is refused (None: it is allowed)."""
    if not allowed:
        return None
    addresses = allowed.get(calling_ae.strip())
    if addresses is None:
        return "calling AE title not on the allow-list"
    mapped = ipaddress.ip_address(address)
    mapped = getattr(mapped, "ipv4_mapped", None) or mapped
    if str(mapped) not in addresses:
        return "calling AE title allowed from another address"
    return None
