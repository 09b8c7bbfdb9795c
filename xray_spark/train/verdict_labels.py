"""Readers' verdicts as training labels: the rule, in one place, and the readers too far from everyone else.

A reader's verdict on a film is *complete* when every finding the model called is confirmed or
rejected, or the film is marked *no finding*. Only complete verdicts (each reader's newest)
become labels: confirmed and missed findings positive, every other finding negative (*no
finding*: all negative). The site sets in advance how many readers it takes
(``train.verdicts_min_readers``, ``train.verdicts_min_readers_over_csv``):

* a film with no other label is labelled by at least ``min_readers`` readers' complete verdicts;
  where several readers answered, a finding is positive when at least half of them call it
  positive (a tie counts as positive: for a second reader, a finding one of two radiologists
  saw is worth learning);
* a film labelled by a labels CSV keeps that label unless at least ``min_readers_over_csv``
  readers (0: never) gave complete verdicts that all say the same: one reader cannot rewrite it.

Before training uses them, each reader's verdicts are compared with a reference
(:func:`reader_agreement`): the labels CSV where the film has one, else the other readers'
majority, else the model's calls the reader was shown. Cohen's kappa over the film-finding cells
below :data:`MIN_KAPPA` on at least :data:`MIN_FILMS` films flags the reader (one who marks every
finding of every film has a kappa of 0). Notes are never read here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

#: Landis and Koch's "slight" agreement: a reader below it, on enough films, is flagged.
MIN_KAPPA = 0.2
MIN_FILMS = 5


def _positives(row: Mapping[str, Any]) -> set[str]:
    return set() if row["no_finding"] else {*(row["confirmed"] or ()), *(row["missed"] or ())}


def _usable(verdicts: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in verdicts if row["current"] and row["complete"]]


def film_labels(
    verdicts: Iterable[Mapping[str, Any]],
    labels: Sequence[str],
    *,
    csv_labelled: Collection[str] = frozenset(),
    min_readers: int = 1,
    min_readers_over_csv: int = 2,
) -> dict[str, tuple[str, int]]:
    """image_id -> (the label vector as ``"0"``/``"1"`` characters in ``labels`` order, readers counted).

    ``verdicts``: rows of ``xray.verdicts`` (``image_id``, ``current``, ``complete``, ``confirmed``,
    ``missed``, ``no_finding``); rows not current or not complete are left out. ``csv_labelled``:
    the films a labels CSV labels, which keep that label unless enough readers agree.
    """
    votes: dict[str, list[set[str]]] = {}
    for row in _usable(verdicts):
        votes.setdefault(row["image_id"], []).append(_positives(row))
    out = {}
    for image_id, readers in votes.items():
        n = len(readers)
        if image_id in csv_labelled:
            if min_readers_over_csv < 1 or n < min_readers_over_csv or any(r != readers[0] for r in readers):
                continue
        elif n < min_readers:
            continue
        vector = "".join("1" if 2 * sum(label in r for r in readers) >= n else "0" for label in labels)
        out[image_id] = (vector, n)
    return out


def _kappa(pairs: list[tuple[bool, bool]]) -> float:
    """Cohen's kappa of (reader, reference) cells; 1 when both never vary and agree."""
    n = len(pairs)
    agree = sum(a == b for a, b in pairs) / n
    p_a, p_b = sum(a for a, _ in pairs) / n, sum(b for _, b in pairs) / n
    chance = p_a * p_b + (1 - p_a) * (1 - p_b)
    return 1.0 if chance >= 1.0 else (agree - chance) / (1 - chance)


def reader_agreement(
    verdicts: Iterable[Mapping[str, Any]], labels: Sequence[str], csv: Mapping[str, Collection[str]]
) -> list[dict[str, Any]]:
    """Per reader: films answered, positives per film, agreement and Cohen's kappa with the reference, flagged.

    ``csv``: image_id -> the findings of the films a labels CSV labels. The reference of a film is
    its CSV label, else the majority of the film's other readers, else the calls the reader was shown.
    """
    rows = _usable(verdicts)
    by_film: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_film.setdefault(row["image_id"], []).append(row)
    cells: dict[str, list[tuple[bool, bool]]] = {}
    films: dict[str, int] = {}
    positives: dict[str, int] = {}
    for image_id, answers in by_film.items():
        for row in answers:
            mine = _positives(row)
            others = [_positives(r) for r in answers if r is not row]
            if image_id in csv:
                reference = set(csv[image_id])
            elif others:
                reference = {x for x in labels if 2 * sum(x in o for o in others) >= len(others)}
            else:
                reference = set(row.get("called") or ())
            reader = str(row["reader"])
            cells.setdefault(reader, []).extend((x in mine, x in reference) for x in labels)
            films[reader] = films.get(reader, 0) + 1
            positives[reader] = positives.get(reader, 0) + len(mine)
    out = []
    for reader in sorted(cells):
        kappa = _kappa(cells[reader])
        agreement = sum(a == b for a, b in cells[reader]) / len(cells[reader])
        flagged = films[reader] >= MIN_FILMS and kappa < MIN_KAPPA
        out.append(
            {
                "reader": reader,
                "films": films[reader],
                "positives_per_film": round(positives[reader] / films[reader], 2),
                "agreement": round(agreement, 3),
                "kappa": round(kappa, 3),
                "flagged": flagged,
            }
        )
    return out
