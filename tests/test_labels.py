from __future__ import annotations

import numpy as np
import pytest

from xray_spark.labels import FINDINGS, choose_label_set, multi_hot, sample_weight

from .oracle import UnknownFindingError, canonical_finding, parse_finding_labels


def test_parse_finding_labels():
    assert parse_finding_labels("No Finding") == []
    assert parse_finding_labels("Effusion|Mass") == ["Effusion", "Mass"]
    assert parse_finding_labels(" Mass | Mass ") == ["Mass"]
    assert parse_finding_labels("Infiltrate") == ["Infiltration"]


@pytest.mark.parametrize("text", ["Tumour", "Mass|Tumour", "", "No Finding|Mass"])
def test_unknown_findings_are_refused(text):
    with pytest.raises(UnknownFindingError):
        parse_finding_labels(text)


def test_bbox_alias():
    assert canonical_finding("Infiltrate") == "Infiltration"
    with pytest.raises(UnknownFindingError):
        canonical_finding("Infiltrates")


def test_multi_hot_follows_the_label_set_order():
    vec = multi_hot(["Nodule", "Atelectasis", "Hernia"], ["Atelectasis", "Mass", "Nodule"])
    np.testing.assert_array_equal(vec, np.array([1, 0, 1], dtype=np.float32))
    assert vec.dtype == np.float32


def test_sample_weight_is_the_thesis_rule():
    assert sample_weight(0) == pytest.approx(0.1)
    assert sample_weight(3) == pytest.approx(3.1)
    assert sample_weight(2, base=1.0, per_finding=0.5) == pytest.approx(2.0)


def test_choose_label_set_keeps_vocabulary_order():
    counts = {name: 100 * i for i, name in enumerate(FINDINGS)}
    assert choose_label_set(counts, FINDINGS, 1200) == ["Pneumonia", "Pneumothorax"]
    assert choose_label_set(counts, ["Pneumothorax", "Mass"], 0) == ["Mass", "Pneumothorax"]
