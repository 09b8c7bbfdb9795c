"""The drawing of the synthetic archive: a chest-like radiograph and one lesion shape per finding.

Each image is a chest-like picture (body, two dark lung fields, spine, heart, ribs, a
view marker) with patient-level anatomy and per-image brightness, contrast, gamma, shift
and noise. Each of the 14 findings is its own shape at its own typical place, so a small
CNN can learn them; the global jitter is larger than what any finding adds to the mean
brightness, so brightness alone does not separate them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float]  # x, y, w, h in the unit square

#: The findings drawn as one local lesion on one side (the others are diffuse, bilateral or the
#: heart's outline): where a heatmap must point.
LOCAL_LESIONS = ("Atelectasis", "Effusion", "Mass", "Nodule", "Pneumonia", "Pneumothorax")


@dataclasses.dataclass
class Canvas:
    """A float image in [0, 1] with unit-square coordinate grids."""

    size: int
    shift: tuple[float, float]
    x: np.ndarray = dataclasses.field(init=False)
    y: np.ndarray = dataclasses.field(init=False)
    pixels: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        grid = (np.arange(self.size, dtype=np.float32) + 0.5) / self.size
        self.x, self.y = np.meshgrid(grid - self.shift[0], grid - self.shift[1])
        self.pixels = np.zeros((self.size, self.size), dtype=np.float32)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, angle: float = 0.0) -> np.ndarray:
        c, s = np.cos(angle), np.sin(angle)
        dx, dy = self.x - cx, self.y - cy
        u = (c * dx + s * dy) / rx
        v = (-s * dx + c * dy) / ry
        return (u * u + v * v <= 1.0).astype(np.float32)

    def gaussian(self, cx: float, cy: float, sigma: float) -> np.ndarray:
        return np.exp(-((self.x - cx) ** 2 + (self.y - cy) ** 2) / (2 * sigma * sigma)).astype(np.float32)

    def soft(self, mask: np.ndarray, blur: float) -> np.ndarray:
        k = max(1, round(blur * self.size) * 2 + 1)
        return cv2.GaussianBlur(mask, (k, k), 0) if k > 1 else mask


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Per-patient geometry: the same patient looks alike across follow-ups."""

    lung_rx: float
    lung_ry: float
    lung_cy: float
    heart_rx: float
    heart_ry: float
    body_level: float
    lung_level: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Anatomy:
        return cls(
            lung_rx=rng.uniform(0.13, 0.16),
            lung_ry=rng.uniform(0.25, 0.29),
            lung_cy=rng.uniform(0.44, 0.47),
            heart_rx=rng.uniform(0.095, 0.115),
            heart_ry=rng.uniform(0.075, 0.09),
            body_level=rng.uniform(0.5, 0.6),
            lung_level=rng.uniform(0.2, 0.28),
        )

    def lung_centre(self, side: int) -> tuple[float, float]:
        return (0.5 + side * 0.18, self.lung_cy)


def _lung_point(rng: np.random.Generator, anat: Anatomy, side: int, zone: tuple[float, float]) -> tuple[float, float]:
    """A point inside one lung, ``zone`` bounding its height as a fraction from top (0) to base (1)."""
    cx, cy = anat.lung_centre(side)
    for _ in range(100):
        v = rng.uniform(*zone) * 2 - 1
        u = rng.uniform(-0.75, 0.75)
        if u * u + v * v <= 0.7:
            return cx + u * anat.lung_rx, cy + v * anat.lung_ry
    return cx, cy + (np.mean(zone) * 2 - 1) * anat.lung_ry * 0.7


def _box_of(mask: np.ndarray, canvas: Canvas, threshold: float = 0.1) -> Box:
    ys, xs = np.nonzero(mask > threshold)
    if len(xs) == 0:
        return (0.0, 0.0, 0.0, 0.0)
    n = canvas.size
    return (xs.min() / n, ys.min() / n, (xs.max() - xs.min() + 1) / n, (ys.max() - ys.min() + 1) / n)


# Each painter adds its finding to the canvas and returns the lesion's mask (for its box).
def _nodule(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.15, 0.85))
    m = c.soft(c.ellipse(x, y, r := rng.uniform(0.022, 0.03), r), 0.004)
    c.pixels += 0.38 * m
    return m


def _mass(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.25, 0.75))
    r = rng.uniform(0.065, 0.085)
    m = c.ellipse(x, y, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi))
    for _ in range(3):  # lobulated edge
        t = rng.uniform(0, 2 * np.pi)
        m = np.maximum(m, c.ellipse(x + 0.8 * r * np.cos(t), y + 0.8 * r * np.sin(t), 0.45 * r, 0.45 * r))
    m = c.soft(m, 0.004)
    c.pixels += 0.32 * m
    return m


def _cardiomegaly(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    m = c.soft(c.ellipse(0.54, 0.63, rng.uniform(0.18, 0.21), rng.uniform(0.12, 0.14)), 0.01)
    c.pixels = np.maximum(c.pixels, (a.body_level + 0.12) * m + c.pixels * (1 - m))
    return m


def _effusion(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    side = rng.choice((-1, 1))
    cx, cy = a.lung_centre(side)
    level = cy + a.lung_ry * rng.uniform(0.35, 0.55)
    lung = c.ellipse(cx, cy, a.lung_rx, a.lung_ry)
    # Meniscus: the fluid line climbs toward the lateral chest wall.
    lateral = np.clip(side * (c.x - cx) / a.lung_rx, 0, 1)
    m = c.soft(lung * (c.y > level - 0.06 * lateral**2).astype(np.float32), 0.012)
    c.pixels += 0.3 * m
    return m


def _atelectasis(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.45, 0.8))
    angle = rng.uniform(-0.35, 0.35)
    m = np.zeros_like(c.pixels)
    for k in (-1, 1):  # two parallel plate-like lines
        m = np.maximum(m, c.ellipse(x, y + k * 0.018, rng.uniform(0.07, 0.09), 0.0065, angle))
    m = c.soft(m, 0.003)
    c.pixels += 0.4 * m
    return m


def _consolidation(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    side = rng.choice((-1, 1))
    x, y = _lung_point(rng, a, side, (0.55, 0.7))
    m = np.zeros_like(c.pixels)
    for _ in range(5):
        m = np.maximum(m, c.ellipse(x + rng.normal(0, 0.03), y + rng.normal(0, 0.03), 0.045, 0.04))
    texture = 0.8 + 0.2 * c.soft(rng.random(c.pixels.shape).astype(np.float32), 0.008)
    m = c.soft(m, 0.008) * texture
    c.pixels += 0.36 * m
    return m


def _edema(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    sigma = rng.uniform(0.05, 0.065)
    m = c.gaussian(0.37, a.lung_cy + 0.02, sigma) + c.gaussian(0.63, a.lung_cy + 0.02, sigma)
    # Kerley-like streaks across both glows.
    streaks = 0.5 + 0.5 * np.cos(2 * np.pi * c.y / 0.03)
    m = m * (0.7 + 0.3 * streaks)
    c.pixels += 0.3 * m
    return m


def _emphysema(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    m = np.zeros_like(c.pixels)
    rims = np.zeros_like(c.pixels)
    for _ in range(int(rng.integers(14, 22))):
        x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.05, 0.55))
        r = rng.uniform(0.012, 0.02)
        inner = c.ellipse(x, y, r, r)
        m = np.maximum(m, inner)
        rims = np.maximum(rims, c.ellipse(x, y, r + 0.006, r + 0.006) - inner)
    c.pixels += 0.25 * c.soft(rims, 0.002) - 0.12 * m
    return m


def _fibrosis(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    zone = np.zeros_like(c.pixels)
    for side in (-1, 1):
        cx, cy = a.lung_centre(side)
        zone = np.maximum(zone, c.ellipse(cx + side * 0.04, cy + 0.1, a.lung_rx * 0.8, a.lung_ry * 0.6))
    spacing = rng.uniform(0.022, 0.028)
    net = (np.abs(((c.x / spacing) % 1) - 0.5) > 0.38) | (np.abs(((c.y / spacing) % 1) - 0.5) > 0.38)
    m = zone * net.astype(np.float32)
    c.pixels += 0.2 * c.soft(m, 0.002)
    return zone


def _hernia(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    x, y = 0.5 + rng.normal(0, 0.015), 0.76 + rng.normal(0, 0.01)
    r = rng.uniform(0.055, 0.07)
    m = c.soft(c.ellipse(x, y, r, r * 0.85), 0.004)
    level = c.soft(c.ellipse(x, y - 0.01, r * 0.8, 0.006), 0.002)  # air-fluid level
    c.pixels += 0.3 * m - 0.3 * level
    return m


def _infiltration(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    m = np.zeros_like(c.pixels)
    for _ in range(int(rng.integers(5, 9))):
        x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.1, 0.9))
        m = np.maximum(m, c.gaussian(x, y, rng.uniform(0.012, 0.018)))
    c.pixels += 0.3 * m
    return m


def _pleural_thickening(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    side = rng.choice((-1, 1))
    cx, cy = a.lung_centre(side)
    outer = c.ellipse(cx, cy, a.lung_rx, a.lung_ry)
    inner = c.ellipse(cx + side * -0.014, cy + 0.006, a.lung_rx - 0.016, a.lung_ry - 0.014)
    lateral_upper = ((side * (c.x - cx) > 0.02) & (c.y < cy + 0.1)).astype(np.float32)
    m = c.soft((outer - inner).clip(0, 1) * lateral_upper, 0.003)
    c.pixels += 0.42 * m
    return m


def _pneumonia(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    x, y = _lung_point(rng, a, rng.choice((-1, 1)), (0.1, 0.35))
    m = c.gaussian(x, y, rng.uniform(0.04, 0.05))
    # Air bronchograms: dark branching lines inside the bright patch.
    branches = np.zeros_like(c.pixels)
    for angle in rng.uniform(0, np.pi, size=3):
        branches = np.maximum(branches, c.ellipse(x, y, 0.04, 0.004, angle))
    c.pixels += 0.45 * m - 0.25 * m * branches
    return m


def _pneumothorax(c: Canvas, rng: np.random.Generator, a: Anatomy) -> np.ndarray:
    side = rng.choice((-1, 1))
    cx, cy = a.lung_centre(side)
    lung = c.ellipse(cx, cy, a.lung_rx, a.lung_ry)
    collapsed = c.ellipse(cx - side * 0.025, cy + 0.04, a.lung_rx * 0.72, a.lung_ry * 0.78)
    air = (lung - collapsed).clip(0, 1) * (c.y < cy + 0.05)
    edge = c.ellipse(cx - side * 0.025, cy + 0.04, a.lung_rx * 0.72 + 0.006, a.lung_ry * 0.78 + 0.006) - collapsed
    edge = edge.clip(0, 1) * (c.y < cy + 0.05)
    c.pixels += -0.14 * c.soft(air, 0.002) + 0.4 * c.soft(edge, 0.002)
    return air


PAINTERS: dict[str, Callable[[Canvas, np.random.Generator, Anatomy], np.ndarray]] = {
    "Atelectasis": _atelectasis,
    "Cardiomegaly": _cardiomegaly,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Effusion": _effusion,
    "Emphysema": _emphysema,
    "Fibrosis": _fibrosis,
    "Hernia": _hernia,
    "Infiltration": _infiltration,
    "Mass": _mass,
    "Nodule": _nodule,
    "Pleural_Thickening": _pleural_thickening,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
}


def render(
    findings: Sequence[str],
    anatomy: Anatomy,
    view: str,
    size: int,
    rng: np.random.Generator,
    finding_contrast: float = 1.0,
) -> tuple[np.ndarray, dict[str, Box]]:
    """One synthetic radiograph (uint8, ``size`` x ``size``) and the unit-square box of each finding.

    ``finding_contrast`` scales what the findings change in the picture: -1 draws each lesion
    darker where the NIH-style films draw it brighter (another hospital's look, for fine-tuning).
    """
    c = Canvas(size, shift=(rng.normal(0, 0.015), rng.normal(0, 0.015)))
    a = anatomy
    c.pixels += 0.06
    body = c.soft(c.ellipse(0.5, 0.56, 0.45, 0.52), 0.02)
    c.pixels += (a.body_level - 0.06) * body
    for side in (-1, 1):
        lung = c.soft(c.ellipse(*a.lung_centre(side), a.lung_rx, a.lung_ry), 0.012)
        c.pixels -= (a.body_level - a.lung_level) * lung
    c.pixels += 0.18 * c.soft(((np.abs(c.x - 0.5) < 0.035) & (c.y > 0.12)).astype(np.float32), 0.006)
    for k in range(9):  # ribs: faint arcs across both lungs
        curve = 0.17 + 0.065 * k + 0.05 * (np.abs(c.x - 0.5) - 0.18) ** 2 / 0.03
        c.pixels += 0.06 * c.soft((np.abs(c.y - curve) < 0.007).astype(np.float32) * body, 0.003)
    boxes: dict[str, Box] = {}
    if "Cardiomegaly" not in findings:
        heart = c.soft(c.ellipse(0.54, 0.63, a.heart_rx, a.heart_ry), 0.01)
        c.pixels = np.maximum(c.pixels, (a.body_level + 0.12) * heart + c.pixels * (1 - heart))
    before = c.pixels.copy()
    for name in findings:
        mask = PAINTERS[name](c, rng, a)
        boxes[name] = _box_of(mask, c)
    if finding_contrast != 1.0:
        c.pixels = before + finding_contrast * (c.pixels - before)
    marker_x = 0.06 if view == "AP" else 0.88
    c.pixels += 0.5 * ((np.abs(c.x - marker_x) < 0.025) & (np.abs(c.y - 0.06) < 0.02)).astype(np.float32)
    c.pixels += rng.normal(0, 0.025, size=c.pixels.shape).astype(np.float32)
    # Global acquisition jitter: larger than any finding's effect on the mean brightness.
    contrast = rng.uniform(0.8, 1.2)
    brightness = rng.uniform(-0.1, 0.1)
    gamma = rng.uniform(0.85, 1.15)
    out = np.clip(c.pixels * contrast + brightness, 0, 1) ** gamma
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), boxes
