"""The rule that turns readers' verdicts into labels: complete verdicts only, each reader's newest, ties positive."""

from __future__ import annotations

import pytest

from xray_spark.errors import UsageError
from xray_spark.verdict_labels import film_labels
from xray_spark.web.verdicts import CONFIRM, MISSED, REJECT, Verdict, check

LABELS = ["Effusion", "Mass", "Nodule"]


def _row(image_id, *, confirmed=(), missed=(), no_finding=False, complete=True, current=True):
    return {
        "image_id": image_id,
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
