"""Shape geometry of the concept world: inside tests in rotated shape coordinates (u, v), radius units.

Every shape name has its default drawing (what the world draws without `Variety.shape_variants`), a few
training variants with continuous parameters, and one held-out variant that only `Variety(styles="heldout")`
uses. Each drawing stays clearly nameable by its shape word and inside the unit circle, the object's radius.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Per shape: its training variants, each (name, uniform ranges of its parameters).
TRAIN_VARIANTS: dict[str, tuple[tuple[str, tuple[tuple[float, float], ...]], ...]] = {
    "circle": (("disc", ()),),
    "ring": (("ring", ((0.5, 0.7),)),),  # inner radius
    "square": (("rounded_square", ((0.0, 0.2),)),),  # corner radius / half side
    "diamond": (("diamond", ((0.52, 0.72),)),),  # width / height
    "cross": (("cross", ((0.22, 0.34), (0.85, 1.0))),),  # arm half-width, arm length (capped: corners inside)
    "triangle": (("equilateral", ()), ("isosceles", ((0.8, 1.3),))),  # height / base
    "hexagon": (("regular_hexagon", ()),),  # any rotation (objects are rotated at random)
    "star": (("star", ((0.38, 0.52),)),),  # inner radius
    "heart": (("curved_heart", ((0.9, 1.15),)),),  # width scale
    "crescent": (("crescent", ((0.3, 0.5), (0.75, 0.85))),),  # cut disc's offset and radius
}
# Per shape: the held-out variant, never drawn with styles="train". Integer parameters are floored.
HELDOUT_VARIANTS: dict[str, tuple[str, tuple[tuple[float, float], ...]]] = {
    "circle": ("polygon_circle", ((14, 19),)),  # 14-18 sides
    "ring": ("thin_ring", ((0.76, 0.82),)),
    "square": ("round_square", ((0.33, 0.37),)),
    "diamond": ("slim_diamond", ((0.42, 0.48),)),
    "cross": ("chunky_cross", ((0.38, 0.42), (0.9, 1.0))),
    "triangle": ("right_triangle", ((0.75, 1.33),)),  # ratio of the legs
    "hexagon": ("stretched_hexagon", ((1.2, 1.3), (0, 2))),  # stretch; along a vertex (0) or edge (1) axis
    "star": ("spiky_star", ((0.28, 0.32),)),
    "heart": ("geometric_heart", ()),
    "crescent": ("thin_crescent", ((0.18, 0.24), (0.86, 0.9))),
}


@dataclass(frozen=True)
class Drawing:
    """One way to draw a shape: a variant name (see TRAIN_VARIANTS, HELDOUT_VARIANTS) and its parameters."""

    variant: str
    params: tuple[float, ...] = ()


def sample_drawing(rng: np.random.Generator, shape: str, styles: str) -> Drawing:
    """A random drawing of `shape`: a training variant, or the held-out one with styles="heldout"."""
    if styles == "heldout":
        variant, ranges = HELDOUT_VARIANTS[shape]
    else:
        options = TRAIN_VARIANTS[shape]
        variant, ranges = options[rng.integers(len(options))]
    return Drawing(variant, tuple(float(rng.uniform(low, high)) for low, high in ranges))


def inside(shape: str, drawing: Drawing | None, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test of a shape in its default drawing (`drawing=None`) or in a variant."""
    if drawing is None:
        return _default_inside(shape, u, v)
    return _VARIANTS[drawing.variant](u, v, *drawing.params)


def erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask shrunk by `steps` pixels (4-neighbourhood); pixels on the window border count as outside."""
    inner = mask.copy()
    for _ in range(steps):
        shrunk = inner.copy()
        shrunk[0], shrunk[-1], shrunk[:, 0], shrunk[:, -1] = False, False, False, False
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return inner


def _regular_polygon(u: np.ndarray, v: np.ndarray, sides: int, normal_angle: float) -> np.ndarray:
    """Inside test for a regular polygon with circumradius 1; one edge normal points at `normal_angle`."""
    sector = 2 * np.pi / sides
    theta = np.arctan2(v, u) - normal_angle
    offset = np.mod(theta + sector / 2, sector) - sector / 2
    return np.hypot(u, v) * np.cos(offset) <= np.cos(np.pi / sides)


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Inside test for a star with one tip pointing up (towards -v), tips at radius 1."""
    sector = 2 * np.pi / points
    theta = np.arctan2(v, u) + np.pi / 2
    folded = np.abs(np.mod(theta + sector / 2, sector) - sector / 2)
    radius = np.hypot(u, v)
    px, py = radius * np.cos(folded), radius * np.sin(folded)
    # The edge from the tip (1, 0) to the inner corner; points left of it are inside.
    ex, ey = inner * np.cos(sector / 2) - 1.0, inner * np.sin(sector / 2)
    return ex * py - ey * (px - 1.0) >= 0


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = u * 1.3, 0.15 - v * 1.3
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _default_inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= 1
    if shape == "ring":
        squared = u * u + v * v
        return (squared <= 1) & (squared >= 0.36)
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if shape == "diamond":
        return np.abs(u) / 0.62 + np.abs(v) <= 1
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "triangle":
        return _regular_polygon(u, v, 3, np.pi / 2)
    if shape == "hexagon":
        return _regular_polygon(u, v, 6, 0.0)
    if shape == "star":
        return _star(u, v)
    if shape == "heart":
        return _heart(u, v)
    if shape == "crescent":
        return (u * u + v * v <= 1) & ((u - 0.4) ** 2 + v * v > 0.64)
    raise ValueError(f"no renderer for shape {shape!r}")


def _convex_polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Inside test for a convex polygon with vertices [n, 2] (u, v) in either winding order."""
    x, y = vertices[:, 0], vertices[:, 1]
    orientation = np.sign(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
    result = np.ones(u.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        result &= orientation * ((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0)) >= 0
    return result


def _triangle(u: np.ndarray, v: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """A non-obtuse triangle scaled into the unit circle: its circumcircle (the smallest circle around it,
    as no angle exceeds 90 degrees) becomes the unit circle."""
    (ax, ay), (bx, by), (cx, cy) = corners
    d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
    centre = np.array([((ax * ax + ay * ay) * (by - cy) + (bx * bx + by * by) * (cy - ay)
                        + (cx * cx + cy * cy) * (ay - by)) / d,
                       ((ax * ax + ay * ay) * (cx - bx) + (bx * bx + by * by) * (ax - cx)
                        + (cx * cx + cy * cy) * (bx - ax)) / d])
    return _convex_polygon(u, v, (corners - centre) / np.hypot(*(corners[0] - centre)))


def _rounded_square(u: np.ndarray, v: np.ndarray, rounding: float) -> np.ndarray:
    half = 0.7
    corner = rounding * half
    qu, qv = np.abs(u) - (half - corner), np.abs(v) - (half - corner)
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0) <= corner


def _ring(u: np.ndarray, v: np.ndarray, inner: float) -> np.ndarray:
    squared = u * u + v * v
    return (squared <= 1) & (squared >= inner * inner)


def _cross(u: np.ndarray, v: np.ndarray, half_width: float, length: float) -> np.ndarray:
    length = min(length, np.sqrt(1 - half_width ** 2))  # arm corners stay inside the unit circle
    au, av = np.abs(u), np.abs(v)
    return ((au <= half_width) & (av <= length)) | ((av <= half_width) & (au <= length))


def _stretched_hexagon(u: np.ndarray, v: np.ndarray, stretch: float, axis: float) -> np.ndarray:
    angles = np.arange(6) * np.pi / 3 + (np.pi / 6 if int(axis) else 0.0)
    corners = np.stack([stretch * np.cos(angles), np.sin(angles)], axis=1)
    return _convex_polygon(u, v, corners / np.hypot(corners[:, 0], corners[:, 1]).max())


def _curved_heart(u: np.ndarray, v: np.ndarray, width: float) -> np.ndarray:
    """The default heart made narrower (width < 1) or squatter (width > 1), slightly smaller so that it
    stays inside the unit circle (the default pokes out by 1%)."""
    x, y = u * 1.32 / min(width, 1.0), 0.15 - v * 1.32 * max(width, 1.0)
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _geometric_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A square standing on a corner with two discs on its upper edges, centred and scaled into the unit
    circle (the discs' outer rims are farthest from the centre)."""
    half = 0.74  # half diagonal of the square
    centre = half * (np.sqrt(0.5) - 0.5) / 2  # puts the top of the discs and the bottom tip equally far out
    du, dv = np.abs(u), v - centre
    square = du + np.abs(dv) <= half
    discs = (du - half / 2) ** 2 + (dv + half / 2) ** 2 <= half * half / 2
    return square | discs


def _crescent(u: np.ndarray, v: np.ndarray, offset: float, cut: float) -> np.ndarray:
    return (u * u + v * v <= 1) & ((u - offset) ** 2 + v * v > cut * cut)


_VARIANTS: dict[str, Callable[..., np.ndarray]] = {
    "disc": lambda u, v: u * u + v * v <= 1,
    "polygon_circle": lambda u, v, sides: _regular_polygon(u, v, int(sides), 0.0),
    "ring": _ring,
    "thin_ring": _ring,
    "rounded_square": _rounded_square,
    "round_square": _rounded_square,
    "diamond": lambda u, v, ratio: np.abs(u) / ratio + np.abs(v) <= 1,
    "slim_diamond": lambda u, v, ratio: np.abs(u) / ratio + np.abs(v) <= 1,
    "cross": _cross,
    "chunky_cross": _cross,
    "equilateral": lambda u, v: _regular_polygon(u, v, 3, np.pi / 2),
    "isosceles": lambda u, v, ratio: _triangle(u, v, np.array([[0.0, -ratio], [-0.5, 0.0], [0.5, 0.0]])),
    "right_triangle": lambda u, v, legs: _triangle(u, v, np.array([[0.0, 0.0], [legs, 0.0], [0.0, 1.0]])),
    "regular_hexagon": lambda u, v: _regular_polygon(u, v, 6, 0.0),
    "stretched_hexagon": _stretched_hexagon,
    "star": lambda u, v, inner: _star(u, v, 5, inner),
    "spiky_star": lambda u, v, inner: _star(u, v, 5, inner),
    "curved_heart": _curved_heart,
    "geometric_heart": _geometric_heart,
    "crescent": _crescent,
    "thin_crescent": _crescent,
}
