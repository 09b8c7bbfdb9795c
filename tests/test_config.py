from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xray_spark.config import PATH_KEYS, Settings, load_settings, parse_override, places
from xray_spark.errors import ConfigError
from xray_spark.labels import FINDINGS

from .conftest import ROOT


def test_local_yaml_is_the_embedded_default_but_for_where_its_files_go(monkeypatch, tmp_path):
    monkeypatch.setenv(places.HOME_ENV, str(tmp_path / "home"))
    local, built_in = load_settings(ROOT / "conf" / "local.yaml"), load_settings()
    assert dataclasses.replace(local, lake=built_in.lake) != built_in  # the places differ, and only they
    for key in PATH_KEYS:
        local = _replace_key(local, key, _value(built_in, key))
    assert local == built_in
    assert load_settings(ROOT / "conf" / "local.yaml").lake == str(ROOT / "lake")


def _value(settings, key):
    for part in key.split("."):
        settings = getattr(settings, part)
    return settings


def _replace_key(settings, key, value):
    head, _, rest = key.partition(".")
    inner = _replace_key(getattr(settings, head), rest, value) if rest else value
    return dataclasses.replace(settings, **{head: inner})


def test_no_path_depends_on_the_working_directory_unless_the_command_line_gives_it(monkeypatch, tmp_path):
    """Defaults under the product's home, a file's paths relative to the file, the command line's to the working
    directory: a job started by cron in / finds what the same settings name from the repository."""
    home, conf = tmp_path / "home", tmp_path / "etc" / "site.yaml"
    conf.parent.mkdir()
    conf.write_text("lake: ../data/lake\nprivacy:\n  identity_dir: identity\ndicom_node:\n  spool: /srv/spool\n")
    monkeypatch.setenv(places.HOME_ENV, str(home))
    seen = []
    for where in (tmp_path, Path("/")):
        monkeypatch.chdir(where)
        built_in, from_file = load_settings(), load_settings(conf)
        seen.append((built_in, from_file))
        assert built_in.lake == str(home / "lake") and built_in.privacy.identity_dir == str(home / "identity")
        assert built_in.dicom_node.spool == str(home / "dicom-spool")
        assert built_in.web.accounts == str(home / "web" / "accounts.sqlite")
        assert from_file.lake == str(tmp_path / "data" / "lake")
        assert from_file.privacy.identity_dir == str(tmp_path / "etc" / "identity")
        assert from_file.dicom_node.spool == "/srv/spool" and from_file.privacy.key_file == ""  # absolute, unused
    assert seen[0] == seen[1]
    monkeypatch.chdir(tmp_path)
    given = load_settings(conf, ["lake=here", "privacy.identity_dir=ids", "web.tls_cert=hdfs://x/cert"])
    assert (given.lake, given.privacy.identity_dir) == (str(tmp_path / "here"), str(tmp_path / "ids"))
    assert given.web.tls_cert == "hdfs://x/cert"
    monkeypatch.delenv(places.HOME_ENV)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_settings().lake == str(tmp_path / "xdg" / "xray-spark" / "lake")


def test_overrides_are_typed_and_applied_in_order():
    s = load_settings(
        None,
        [
            "image.size=224",
            "labels.min_cases=5000",
            "split.train=0.8",
            "split.val=0.0",
            "image.size=256",
            "labels.findings=[Mass, Nodule]",
            "spark.master=local[4]",
        ],
    )
    assert s.image.size == 256
    assert s.labels.min_cases == 5000
    assert s.split.train == 0.8 and s.split.test == 0.2
    assert s.labels.findings == ["Mass", "Nodule"]
    assert s.spark.master == "local[4]"


def test_int_is_accepted_where_a_float_is_expected():
    assert load_settings(None, ["quarantine.max_fraction=1"]).quarantine.max_fraction == 1.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("image.sise=224", r"unknown configuration key 'image.sise'"),
        ("imaging.size=224", r"unknown configuration key 'imaging'"),
        ("image.size=big", r"'image.size' must be an integer, got 'big'"),
        ("image.size=2.5", r"'image.size' must be an integer"),
        ("labels.min_cases=true", r"'labels.min_cases' must be an integer"),
        ("quarantine.max_fraction=lots", r"'quarantine.max_fraction' must be a number"),
        ("labels.findings=Mass", r"'labels.findings' must be a list"),
        ("labels.findings=[Tumour]", r"unknown findings \['Tumour'\]"),
        ("split.train=0.9", r"split.train \+ split.val \+ split.test must be 1"),
        ("image=5", r"'image' must be a mapping"),
        ("no-equals-sign", r"must look like key=value"),
        # nonsense that was accepted, or failed later with a traceback
        ("score.batch_size=0", r"'score.batch_size' must lie in \[1, 4096\], got 0"),
        ("score.batch_size=-4", r"'score.batch_size' must lie in \[1, 4096\], got -4"),
        ("sql_server.refresh_seconds=.inf", r"'sql_server.refresh_seconds' must be a finite number, got inf"),
        ("sql_server.refresh_seconds=.nan", r"'sql_server.refresh_seconds' must be a finite number"),
        ("sql_server.statement_timeout_seconds=0", r"'sql_server.statement_timeout_seconds' must lie in \[1, 86400\]"),
        ("spark.driver_memory=-1g", r"'spark.driver_memory' must be a positive memory size such as 4g"),
        ("spark.driver_memory=lots", r"'spark.driver_memory' must be a positive memory size"),
        ("spark.shuffle_partitions=0", r"'spark.shuffle_partitions' must be at least 1"),
        ("spark.conf.spark.sql.shuffle.partitions=-3", r"'spark.conf.spark.sql.shuffle.partitions' must be a whole"),
        ("spark.conf.spark.executor.memory=2x", r"'spark.conf.spark.executor.memory' must be a positive memory size"),
        ("monitor.reference=nights:0", r"'monitor.reference' must be nights:N \(N >= 1"),
        ("monitor.reference=last_week", r"'monitor.reference' must be nights:N .* or validation, got 'last_week'"),
        ("monitor.alpha=1.5", r"'monitor.alpha' must lie in \(0, 1\), got 1.5"),
        ("monitor.min_films=0", r"'monitor.min_films' must be at least 1"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, [override])


def test_conf_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image:\n  size: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("labels:\n  min_case: 10\n")
    with pytest.raises(ConfigError, match=r"'labels\.min_case'"):
        load_settings(unknown)


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=x=y") == ("a", "x=y")
    assert parse_override("a=") == ("a", "")


def test_settings_are_frozen_and_json_dumpable():
    s = Settings()
    with pytest.raises(AttributeError):
        s.image.size = 3  # type: ignore[misc]
    assert '"min_cases": 0' in s.to_json()
    assert list(s.labels.findings) == list(FINDINGS)


def test_one_spark_property_can_be_overridden_by_its_own_dotted_name():
    s = load_settings(ROOT / "conf" / "standalone.yaml", ["spark.conf.spark.ui.port=4050", "spark.master=local[1]"])
    assert s.spark.conf["spark.ui.port"] == "4050"
    assert s.spark.conf["spark.executor.memory"] == "1500m", "the file's other properties stay"
    assert s.spark.master == "local[1]"


def test_dataset_names_cannot_start_with_an_underscore():
    with pytest.raises(ConfigError, match="'dataset' must be a simple name"):
        load_settings(None, ["dataset=_staging"])


def test_config_get_prints_one_resolved_value():
    import subprocess
    import sys

    args = [sys.executable, "-m", "xray_spark.config", "--config", str(ROOT / "conf" / "standalone.yaml")]
    out = subprocess.run([*args, "--get", "spark.master"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "spark://127.0.0.1:7077"
    bad = subprocess.run([*args, "--get", "spark.nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown configuration key 'spark.nope'" in bad.stderr


def test_a_nonsense_setting_is_one_line_before_spark_starts(tmp_path):
    from .jobs import run_job

    result = run_job("score", ["--lake", str(tmp_path / "lake"), "--set", "score.batch_size=0"], cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "score: error: configuration key 'score.batch_size' must lie in [1, 4096], got 0"
    ], result.stderr


def test_every_conf_file_holds_to_the_schema_and_the_schema_file_is_current():
    import json
    import subprocess
    import sys

    from xray_spark.config.schema import json_schema

    for path in sorted((ROOT / "conf").glob("*.yaml")):
        load_settings(path)  # unknown keys, wrong types, values out of bounds: a ConfigError naming the key
        assert "$schema=settings.schema.json" in path.read_text().splitlines()[0], f"{path.name}: editors' schema"
    written = json.loads((ROOT / "conf" / "settings.schema.json").read_text())
    assert written == json.loads(json.dumps(json_schema(Settings))), "python -m xray_spark.config --json-schema"
    printed = subprocess.run(
        [sys.executable, "-m", "xray_spark.config", "--json-schema"], capture_output=True, text=True, check=True
    )
    assert json.loads(printed.stdout) == written


def test_each_key_is_declared_with_its_comment_and_bounds_in_one_place():
    import dataclasses

    from xray_spark.config.schema import json_schema

    schema = json_schema(Settings)
    size = schema["properties"]["image"]["properties"]["size"]
    assert (size["minimum"], size["maximum"], size["default"]) == (8, 4096, 128) and size["description"]
    assert schema["properties"]["train"]["properties"]["loss"]["enum"] == ["weighted_bce", "bce", "focal"]
    undocumented = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            nested = dataclasses.is_dataclass(f.default_factory)  # a sub-section: its own keys carry the comments
            if not f.metadata.get("doc") and not nested:
                undocumented.append(prefix + f.name)

    import typing

    for name, hint in typing.get_type_hints(Settings).items():
        if dataclasses.is_dataclass(hint):
            walk(hint, f"{name}.")
    assert not undocumented, f"keys without a comment: {undocumented}"
    with pytest.raises(ConfigError, match=r"'image.size' must lie in \[8, 4096\], got 4"):
        load_settings(None, ["image.size=4"])
    with pytest.raises(ConfigError, match=r"'train.loss' must be weighted_bce, bce or focal, got 'hinge'"):
        load_settings(None, ["train.loss=hinge"])
    with pytest.raises(ConfigError, match=r"'dicom_node.max_associations_per_address' must lie in"):
        load_settings(None, ["dicom_node.max_associations=4", "dicom_node.max_associations_per_address=5"])
