"""Five nights, run the way an operator runs them: the PACS down one night, every other night green.

A site's configuration in a folder of its own (every path in it relative to it); the DICOM node
receives each night's films from dcmtk's ``dcmsend``; each night is ``nightly --conf FILE
--source dicom`` started in an unrelated working directory, the last one through its systemd
unit (:func:`units.run_unit`: from ``/``, only the unit's environment). Orthanc, the PACS the
results go back to, is stopped for night 3 and back for night 4, a night when no study arrived
(a Sunday). Nights 1, 2, 4 and 5 exit 0, night 3 exits 4, night 4 (nothing new) delivers night 3's
films, and Orthanc holds each film's SR once. (Two more green nights between the quiet one and the
last added a minute and a half and checked nothing these do not.)
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from xray_spark import systemd
from xray_spark.dev.dicom_archive import write_dicom_archive
from xray_spark.lake import Lake
from xray_spark.registry import register_model, set_alias

from .conftest import TEST_OVERRIDES
from .dicom_peers import bridge, dcmsend, need, need_root, network_namespace, orthanc, orthanc_rest, running_node
from .jobs import run_in_process
from .units import run_unit

NIGHTS = 5
PER_NIGHT = 3
QUIET = 4  # the night no study arrives: it still delivers what the night before could not
KEY = "a-week-of-nights-key-long-enough-0123"


def _site(root: Path, pacs_port: int) -> Path:
    conf = root / "etc" / "site.yaml"
    conf.parent.mkdir(parents=True)
    key = root / "etc" / "pseudonym.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    overrides = dict(item.split("=", 1) for item in TEST_OVERRIDES)
    conf.write_text(
        "\n".join(
            [
                "lake: ../lake",
                "dataset: hospital",
                f"image: {{size: {overrides['image.size']}}}",
                f"prepare: {{images_per_file: {overrides['prepare.images_per_file']}}}",
                "spark: {shuffle_partitions: 4}",
                "score: {heatmaps: none}",
                "web: {display_max_side: 0}",
                "quarantine: {max_fraction: 0.5}",
                "privacy: {key_file: pseudonym.key, identity_dir: ../identity}",
                "dicom_node: {spool: ../spool}",
                f"deliver: {{destinations: ['ORTHANC@127.0.0.1:{pacs_port}'], timeout_seconds: 10}}",
                "",
            ]
        )
    )
    return conf


def _srs(namespace: str) -> list[str]:
    """The SOP Instance UIDs of the SRs Orthanc holds."""
    query = {"Level": "Instance", "Query": {"Modality": "SR"}, "Expand": True}
    found = orthanc_rest(namespace, "POST", "/tools/find", json.dumps(query).encode())
    return [instance["MainDicomTags"]["SOPInstanceUID"] for instance in found]


def test_five_nights_end_green_but_the_night_the_pacs_was_down(spark, small_model, tmp_path, monkeypatch):
    need("dcmsend")
    need_root("Orthanc in a network namespace")
    busy = [n for n in range(1, NIGHTS + 1) if n != QUIET]
    write_dicom_archive(tmp_path / "archive", n_images=len(busy) * PER_NIGHT, size=64, seed=43, labelled=0.0)
    export = tmp_path / "archive" / "export"
    films = sorted(export.glob("PT*/ST*/SE*/IM*"))  # the frontal chest films (not OTHER/, DICOMDIR, README.TXT)
    assert len(films) == len(busy) * PER_NIGHT
    elsewhere = tmp_path / "elsewhere"  # cron's working directory: nothing of the product is here
    elsewhere.mkdir()
    statuses, summaries = [], []
    with network_namespace() as ns, bridge(ns, 4242) as pacs_port:
        conf = _site(tmp_path, pacs_port)
        lake = Lake.at(str(tmp_path / "lake"))
        register_model(spark, lake, small_model["model_dir"], dataset="nih")
        set_alias(spark, lake, small_model["version"], reason="the nights' champion")
        unit = systemd.units(str(conf), user=True, home=str(tmp_path / "home"))["xray-spark-nightly.service"]
        unit = unit.replace("--source dicom", f"--source dicom --summary-json {tmp_path / 'night-5.json'}")
        with running_node(tmp_path, extra=["--config", conf]) as node:
            assert node.spool == tmp_path / "spool"
            for night in range(1, NIGHTS + 1):
                if night != QUIET:
                    k = busy.index(night)
                    assert dcmsend(node.port, films[k * PER_NIGHT : (k + 1) * PER_NIGHT]).returncode == 0
                summary = tmp_path / f"night-{night}.json"
                down = night == 3
                with orthanc(tmp_path, ns, {}) if not down else contextlib.nullcontext():
                    if night < NIGHTS:
                        monkeypatch.chdir(elsewhere)
                        args = ["--config", str(conf), "--source", "dicom", "--summary-json", str(summary)]
                        statuses.append(run_in_process("nightly", args).returncode)
                    else:  # the last night as systemd's timer starts it
                        with run_unit(unit, stop_timeout_s=30) as proc:
                            statuses.append(proc.wait(timeout=600))
                    summaries.append(json.loads(summary.read_text()))
                    if not down:
                        held = _srs(ns)
        assert not list(elsewhere.iterdir()), "nothing lands in the working directory"
    assert statuses == [0, 0, 4, 0, 0], [s.get("deliver") for s in summaries]
    delivered = [s["deliver"] for s in summaries]
    assert [d["to_deliver"] for d in delivered] == [PER_NIGHT] * NIGHTS
    assert delivered[2]["failed"] == PER_NIGHT and delivered[QUIET - 1]["retried"] == PER_NIGHT
    assert [d.get("sent", 0) for d in delivered] == [3, 3, 0, 3, 3]
    assert not any(d.get("aged_out") or d.get("given_up") for d in delivered)
    assert len(held) == len(set(held)) == len(films), "each film's SR once, night 3's included"
    assert summaries[QUIET - 1]["spool"] == {"ingested": 0} and "score" not in summaries[QUIET - 1]
    assert all(summaries[n - 1]["score"]["written"] == PER_NIGHT for n in busy)
