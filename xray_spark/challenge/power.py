"""Before the test: can these films show non-inferiority at the margin at all?

For each judged finding the standard error of AUROC(challenger) - AUROC(champion) is foreseen
from what is known before the challenger's results are looked at: the finding's positives and
negatives on the challenge's films, the champion's AUROC there, and an assumed correlation
between the two models' AUROC estimates (``promotion.assumed_correlation``). Each AUROC's
variance is Hanley and McNeil's (Radiology 1982; 143:29-36):

    Var(A) = [A(1-A) + (n1-1)(Q1-A^2) + (n0-1)(Q2-A^2)] / (n1 n0),  Q1 = A/(2-A),  Q2 = 2A^2/(1+A)

and of the paired difference of two models as good as each other ``2 Var(A) (1 - r)``. A
non-inferiority test at level ``level`` shows, with probability ``power``, that an equal
challenger is within ``margin`` only when ``SE <= margin / (z_(1-(1-level)/2) + z_power)``.
When it cannot, the films needed (same prevalence) are computed by search.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist


@dataclasses.dataclass(frozen=True)
class Power:
    finding: str
    films: int
    positives: int
    se: float  # the foreseen standard error of the difference
    target: float  # the largest standard error that shows non-inferiority with the asked power
    films_needed: int
    positives_needed: int

    @property
    def enough(self) -> bool:
        return self.se <= self.target

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"enough": self.enough}


def auroc_variance(auroc: float, positives: float, negatives: float) -> float:
    """Hanley and McNeil's variance of an AUROC estimate."""
    a = min(max(auroc, 0.5), 0.999)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    top = a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)
    return top / (positives * negatives)


def difference_se(auroc: float, positives: float, negatives: float, correlation: float) -> float:
    return math.sqrt(max(2 * auroc_variance(auroc, positives, negatives) * (1 - correlation), 0.0))


def target_se(margin: float, level: float, power: float) -> float:
    z = NormalDist()
    return margin / (z.inv_cdf(1 - (1 - level) / 2) + z.inv_cdf(power))


def power_of(
    finding: str,
    auroc: float,
    positives: int,
    negatives: int,
    *,
    margin: float,
    level: float,
    power: float,
    correlation: float,
) -> Power:
    """The foreseen standard error on these films, the target, and the films (and positives) that would reach it."""
    target = target_se(margin, level, power)
    se = difference_se(auroc, positives, negatives, correlation)
    scale = 1.0
    if se > target:  # grow the films at the same prevalence until the target is met: doubling, then bisection
        low, high = 1.0, 2.0
        while difference_se(auroc, positives * high, negatives * high, correlation) > target:
            low, high = high, high * 2
        for _ in range(60):
            mid = (low + high) / 2
            if difference_se(auroc, positives * mid, negatives * mid, correlation) > target:
                low = mid
            else:
                high = mid
        scale = high
    films = positives + negatives
    return Power(finding, films, positives, se, target, math.ceil(films * scale), math.ceil(positives * scale))
