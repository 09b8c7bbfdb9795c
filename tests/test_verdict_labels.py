"""The rule that turns readers' verdicts into labels: complete verdicts only, each reader's newest, ties positive."""

from __future__ import annotations

import pytest

from xray_spark.errors import UsageError
from xray_spark.train.verdict_labels import film_labels, reader_agreement
from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, Verdict, check

LABELS = ["Effusion", "Mass", "Nodule"]


def _row(image_id, *, confirmed=(), missed=(), no_finding=False, complete=True, current=True, reader="r", called=()):
    return {
        "image_id": image_id,
        "reader": reader,
        "called": list(called),
        "confirmed": list(confirmed),
        "missed": list(missed),
        "no_finding": no_finding,
        "complete": complete,
        "current": current,
    }


def test_confirmed_and_missed_are_positive_and_incomplete_or_older_verdicts_count_for_nothing():
    rows = [
        _row("a", confirmed=["Mass"], missed=["Nodule"]),
        _row("b", no_finding=True),
        _row("c", confirmed=["Mass"], complete=False),
        _row("d", confirmed=["Mass"], current=False),
    ]
    assert film_labels(rows, LABELS) == {"a": ("011", 1), "b": ("000", 1)}


def test_readers_who_disagree_are_counted_and_a_tie_is_positive():
    rows = [
        _row("a", confirmed=["Mass"]),
        _row("a", confirmed=["Mass", "Effusion"]),
        _row("a", no_finding=True),
        _row("b", confirmed=["Nodule"]),
        _row("b", no_finding=True),
    ]
    # a: Mass 2 of 3 (positive), Effusion 1 of 3 (negative); b: Nodule 1 of 2, a tie (positive)
    assert film_labels(rows, LABELS) == {"a": ("010", 3), "b": ("001", 2)}


def test_a_verdict_is_complete_only_when_every_call_is_answered_and_contradictions_are_refused():
    called = ("Mass", "Effusion")
    assert not Verdict("d", "x", "r", "v", called, {"Mass": CONFIRM}).complete()
    assert Verdict("d", "x", "r", "v", called, {"Mass": CONFIRM, "Effusion": REJECT}).complete()
    assert Verdict("d", "x", "r", "v", called, {}, no_finding=True).complete()
    with pytest.raises(UsageError, match="contradict"):
        check(Verdict("d", "x", "r", "v", called, {"Nodule": MISSED}, no_finding=True))
    with pytest.raises(UsageError, match="called by the model"):
        check(Verdict("d", "x", "r", "v", called, {"Mass": MISSED}))
    with pytest.raises(UsageError, match="not called"):
        check(Verdict("d", "x", "r", "v", called, {"Nodule": CONFIRM}))


def test_one_reader_cannot_rewrite_a_labels_csv_and_agreeing_readers_can_as_the_site_set():
    csv = {"a", "b"}
    one = [_row("a", confirmed=["Mass"]), _row("c", confirmed=["Nodule"])]
    assert film_labels(one, LABELS, csv_labelled=csv) == {"c": ("001", 1)}  # a keeps its CSV label
    agree = [_row("a", confirmed=["Mass"], reader="r1"), _row("a", confirmed=["Mass"], reader="r2")]
    assert film_labels(agree, LABELS, csv_labelled=csv) == {"a": ("010", 2)}
    split = [_row("b", confirmed=["Mass"], reader="r1"), _row("b", no_finding=True, reader="r2")]
    assert film_labels(split, LABELS, csv_labelled=csv) == {}  # two readers who disagree leave the CSV's label
    assert film_labels(agree, LABELS, csv_labelled=csv, min_readers_over_csv=0) == {}  # never, by the site's rule
    assert film_labels(one, LABELS, csv_labelled=csv, min_readers_over_csv=1)["a"] == ("010", 1)
    assert film_labels(one, LABELS, csv_labelled=csv, min_readers=2) == {}  # c has one reader of two needed


def test_a_reader_who_marks_every_finding_of_every_film_is_flagged_and_careful_readers_are_not():
    from xray_spark.labels import FINDINGS

    csv = {f"f{i}": (["Mass"] if i % 3 == 0 else []) for i in range(30)}  # the CSV's truth
    rows = []
    for i in range(30):
        truth = csv[f"f{i}"]
        rows.append(_row(f"f{i}", confirmed=truth, no_finding=not truth, reader="careful", called=truth))
        rows.append(
            _row(
                f"f{i}",
                confirmed=truth,
                missed=["Nodule"] if i == 4 else [],
                no_finding=False,
                reader="second",
                called=truth,
            )
        )
        rows.append(_row(f"f{i}", missed=[x for x in FINDINGS if x not in truth], confirmed=truth, reader="mallory"))
    # films with no CSV label: judged against the other readers, else the model's calls
    rows.append(_row("u1", confirmed=["Effusion"], reader="careful", called=["Effusion"]))
    report = {r["reader"]: r for r in reader_agreement(rows, FINDINGS, csv)}
    assert report["mallory"]["flagged"] and report["mallory"]["kappa"] < 0.05
    assert report["mallory"]["positives_per_film"] == 14.0
    assert not report["careful"]["flagged"] and report["careful"]["kappa"] == 1.0
    assert not report["second"]["flagged"] and report["second"]["kappa"] > 0.8
    few = [r for r in rows if r["reader"] == "mallory"][:4]
    assert not reader_agreement(few, FINDINGS, csv)[0]["flagged"]  # four films are too few to judge a reader
