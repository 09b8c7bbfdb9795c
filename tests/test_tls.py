"""DICOM over TLS: the node takes films from a sender whose certificate its authority signed, and no other sender."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from xray_spark.dev.dicom_films import encode, film

from . import corpus
from .dicom_peers import AE, instance_digest, make_pki, need, running_node


def _storescu(port: int, path: Path, *tls: str) -> subprocess.CompletedProcess:
    command = [need("storescu"), *tls, "-aec", AE, "-aet", "PACS", "-to", "10", "127.0.0.1", str(port), str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_node_over_tls_takes_films_from_a_trusted_sender_only(tmp_path):
    pki = make_pki(tmp_path / "pki")
    path = tmp_path / "film.dcm"
    pixels = (corpus.chest_like(64, 3).astype(np.uint16) * 16).astype(np.uint16)
    ds = film(pixels, bits_stored=12, PatientID="TLS0001", PatientName="Over^Tls")
    path.write_bytes(encode(ds, "explicit-le"))
    settings = [
        "--set", f"dicom_node.tls_cert={pki['server']}", "--set", f"dicom_node.tls_key={pki['server_key']}",
        "--set", f"dicom_node.tls_ca_file={pki['ca']}",
    ]  # fmt: skip
    with running_node(tmp_path, extra=settings) as node:
        plain = _storescu(node.port, path)
        stranger = _storescu(
            node.port, path, "+tls", str(pki["stranger_key"]), str(pki["stranger"]), "+cf", str(pki["ca"])
        )
        anonymous = _storescu(node.port, path, "+tla", "+cf", str(pki["ca"]))
        assert not node.received(), "no film from a sender without a certificate the node's authority signed"
        trusted = _storescu(node.port, path, "+tls", str(pki["client_key"]), str(pki["client"]), "+cf", str(pki["ca"]))
        received = node.received()
        log = node.log()
    assert plain.returncode != 0 and stranger.returncode != 0 and anonymous.returncode != 0
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert [p.name for p in received] == [f"{ds.SOPInstanceUID}.dcm"]
    assert instance_digest(received[0]) == instance_digest(path), "the data set as sent, element for element"
    assert log.count("TLS failed") >= 2, log[-3000:]
    from xray_spark import audit
    from xray_spark.config import places

    home = Path(os.environ[places.HOME_ENV])
    entries = list(audit.read(str(home / "audit" / "audit.log")))
    alerts = [e for e in entries if e.event == "Security Alert" and "127.0.0.1" in e.users]
    assert len(alerts) == log.count("TLS failed"), "each connection whose TLS failed is a Security Alert"
    moved = [e for e in entries if "TLS0001" in e.patients]
    assert [(e.event, e.action, e.users) for e in moved] == [("DICOM Instances Transferred", "C", ("PACS",))]
    assert moved[0].studies == (str(ds.StudyInstanceUID),)


def test_tls_settings_go_together():
    from xray_spark.config import load_settings
    from xray_spark.errors import ConfigError

    with pytest.raises(ConfigError, match="go together"):
        load_settings(None, ["dicom_node.tls_cert=/etc/xray/node.pem"])
    with pytest.raises(ConfigError, match="go together"):
        load_settings(None, ["dicom_node.tls_ca_file=/etc/xray/ca.pem"])
