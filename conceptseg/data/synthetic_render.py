"""Numpy rasteriser for the synthetic concept world: shapes, fill patterns, backgrounds, occlusion.

Images are built as float32 canvases [S, S, 3] and converted to uint8 at the end. Shapes are drawn without
anti-aliasing so that every instance mask is exactly the set of pixels the object paints. Pixel (row i,
column j) has its centre at (x, y) = (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conceptseg.data.synthetic_phrases import COLOURS

# Scale of a pattern's darker paint relative to the object's colour.
_PATTERN_SHADE = 0.45


@dataclass(frozen=True)
class Placement:
    """Where and how one object is drawn. `radius` (px) bounds the shape; `angle` is in radians."""

    shape: str
    pattern: str
    rgb: tuple[float, float, float]
    centre_x: float
    centre_y: float
    radius: float
    angle: float


@dataclass(frozen=True)
class ShapeMask:
    """An object's full (unoccluded, unclipped) mask on its pixel window, whose corner is at (top, left),
    with the window's rotated shape coordinates u, v (float32 [h, w], radius units) for painting."""

    top: int
    left: int
    mask: np.ndarray  # bool [h, w]
    u: np.ndarray
    v: np.ndarray

    def clipped(self, size: int) -> tuple[slice, slice, slice, slice]:
        """Image (rows, cols) slices covered by the window inside a size x size image, and the matching
        (rows, cols) slices of the window."""
        height, width = self.mask.shape
        y0, x0 = max(self.top, 0), max(self.left, 0)
        y1, x1 = max(min(self.top + height, size), y0), max(min(self.left + width, size), x0)
        local_rows = slice(y0 - self.top, y1 - self.top)
        local_cols = slice(x0 - self.left, x1 - self.left)
        return slice(y0, y1), slice(x0, x1), local_rows, local_cols


def _local_coordinates(placement: Placement) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Top-left corner of the object's pixel window and rotated shape coordinates (u, v) in radius units."""
    reach = placement.radius + 1.0
    left = int(np.floor(placement.centre_x - reach))
    top = int(np.floor(placement.centre_y - reach))
    width = int(np.ceil(placement.centre_x + reach)) - left
    height = int(np.ceil(placement.centre_y + reach)) - top
    x = ((np.arange(width, dtype=np.float32) + left + 0.5 - placement.centre_x) / placement.radius)[None, :]
    y = ((np.arange(height, dtype=np.float32) + top + 0.5 - placement.centre_y) / placement.radius)[:, None]
    cos, sin = np.float32(np.cos(placement.angle)), np.float32(np.sin(placement.angle))
    return top, left, x * cos + y * sin, y * cos - x * sin


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


def _inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
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


def shape_mask(placement: Placement) -> ShapeMask:
    """Rasterise one object's full shape (ignoring occlusion and the image border)."""
    top, left, u, v = _local_coordinates(placement)
    return ShapeMask(top, left, _inside(placement.shape, u, v), u, v)


def empty_shape_mask() -> ShapeMask:
    """A mask that covers no pixel (an object that is not drawn)."""
    nothing = np.zeros((0, 0), dtype=np.float32)
    return ShapeMask(0, 0, nothing.astype(bool), nothing, nothing)


def object_paint(placement: Placement, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colours [n, 3] float32 at n object pixels with shape coordinates u, v [n]: base colour, fill
    pattern and soft shading."""
    shading = 1.0 + 0.1 * u  # light falls from one side; rotates with the object
    paint = np.empty((len(u), 3), dtype=np.float32)
    for channel in range(3):  # per channel: numpy broadcasts a trailing axis of 3 slowly
        np.multiply(shading, placement.rgb[channel], out=paint[:, channel])
    if placement.pattern == "striped":
        period = max(4.0, placement.radius / 3.0)
        dark = np.floor(v * placement.radius / (period / 2)) % 2 == 1
    elif placement.pattern == "dotted":
        spacing = max(4.0, placement.radius / 2.5)
        fu = np.mod(u * placement.radius / spacing, 1.0) - 0.5
        fv = np.mod(v * placement.radius / spacing, 1.0) - 0.5
        dark = fu * fu + fv * fv <= 0.3 ** 2
    else:
        return paint
    paint[dark] *= _PATTERN_SHADE
    return paint


def compose_owners(masks: list[ShapeMask], size: int) -> np.ndarray:
    """Painter's algorithm on labels: int16 [S, S] index of the top-most object per pixel, -1 = background."""
    owners = np.full((size, size), -1, dtype=np.int16)
    for index, shape in enumerate(masks):
        rows, cols, local_rows, local_cols = shape.clipped(size)
        owners[rows, cols][shape.mask[local_rows, local_cols]] = index
    return owners


def visible_masks_and_boxes(owners: np.ndarray, masks: list[ShapeMask]) -> tuple[np.ndarray, np.ndarray]:
    """Visible masks bool [N, S, S] and their tight boxes float32 [N, 4] (x0, y0, x1, y1 px, x1/y1
    exclusive, i.e. the pixel-edge box COCO's toBbox gives)."""
    size = owners.shape[0]
    visible = np.zeros((len(masks), size, size), dtype=bool)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index, shape in enumerate(masks):
        rows, cols, _, _ = shape.clipped(size)
        region = owners[rows, cols] == index
        visible[index, rows, cols] = region
        ys, xs = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
        if len(ys):
            x0, y0 = cols.start + xs[0], rows.start + ys[0]
            boxes[index] = (x0, y0, cols.start + xs[-1] + 1, rows.start + ys[-1] + 1)
    return visible, boxes


def paint_objects(canvas: np.ndarray, owners: np.ndarray, placements: list[Placement],
                  masks: list[ShapeMask]) -> None:
    """Paint each object's visible pixels (per `owners`) onto a canvas [S, S, 3] in place."""
    size = owners.shape[0]
    for index, (placement, shape) in enumerate(zip(placements, masks)):
        rows, cols, local_rows, local_cols = shape.clipped(size)
        region = owners[rows, cols] == index
        if region.any():
            u, v = shape.u[local_rows, local_cols][region], shape.v[local_rows, local_cols][region]
            canvas[rows, cols][region] = object_paint(placement, u, v)


def muted_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """Low-saturation background colours [count, 3] float32 in 0..255 (never mistaken for a named colour)."""
    hue = rng.random(count, dtype=np.float32)
    saturation = rng.uniform(0.0, 0.3, count).astype(np.float32)
    value = rng.uniform(0.2, 0.9, count).astype(np.float32)
    pure = np.clip(np.abs(np.mod(hue[:, None] * 6 + np.array([0, 4, 2], np.float32), 6) - 3) - 1, 0, 1)
    return 255 * value[:, None] * (1 - saturation[:, None] + saturation[:, None] * pure)


def _smooth_field(grid: np.ndarray, out: np.ndarray) -> None:
    """Bilinear upsampling (pixel-centre aligned, edges clamped) of a grid [k, k, C] into out [S, S, C].
    Works band by band between grid rows so that no full-size temporary is allocated: on this kind of
    machine the page faults of a fresh image-sized array cost more than the arithmetic."""
    size, cells = out.shape[0], grid.shape[0]
    position = np.clip((np.arange(size, dtype=np.float32) + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = position.astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    weight = (position - low.astype(np.float32))[:, None, None]  # [S, 1, 1]
    columns = grid[:, low] + (grid[:, high] - grid[:, low]) * weight[:, 0]  # [k, S, C], x interpolated
    steps = columns[np.minimum(np.arange(cells) + 1, cells - 1)] - columns
    bounds = np.searchsorted(low, np.arange(cells + 1))  # rows bounds[i]:bounds[i+1] lie after grid row i
    for row in range(cells):
        band = slice(bounds[row], bounds[row + 1])
        np.multiply(weight[band], steps[row], out=out[band])
        out[band] += columns[row]


def render_background(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """Fill a float32 canvas [S, S, 3] with a flat, gradient, blotchy or two-tone cluttered background,
    sometimes crossed by distractor strokes. Colour vectors are never broadcast per pixel: numpy's
    loops over a trailing axis of 3 are very slow, so fills go row-wise or channel by channel."""
    size = canvas.shape[0]
    style = rng.integers(4)
    if style == 0:  # flat
        canvas.reshape(size, size * 3)[:] = np.tile(muted_colours(rng, 1)[0], size)
    elif style in (1, 2):  # gradient (2x2 grid) or smooth blotches
        cells = 2 if style == 1 else int(rng.integers(3, 13))
        _smooth_field(muted_colours(rng, cells * cells).reshape(cells, cells, 3), canvas)
    else:  # two-tone clutter: a thresholded smooth random field mixes two colours
        cells = int(rng.integers(4, 17))
        weight = canvas[..., :1]  # the red channel holds the mixing weight until it is painted last
        _smooth_field(rng.random((cells, cells, 1), dtype=np.float32), weight)
        weight -= 0.5
        weight *= 6
        weight += 0.5
        np.clip(weight, 0, 1, out=weight)
        first, second = muted_colours(rng, 2)
        for channel in (2, 1, 0):
            np.multiply(weight[..., 0], first[channel] - second[channel], out=canvas[..., channel])
            canvas[..., channel] += second[channel]
    if rng.random() < 0.5:
        _draw_strokes(canvas, rng, int(rng.integers(1, 7)))


def _draw_strokes(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin distractor line segments; a third use a named colour so colour alone never means "object".
    A stroke is stamped as a dense set of points across its width (cheaper than distances per pixel)."""
    size = canvas.shape[0]
    named = np.asarray(list(COLOURS.values()), dtype=np.float32)
    for _ in range(count):
        start, end = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        width = rng.uniform(1.0, 3.0)
        colour = named[rng.integers(len(named))] if rng.random() < 0.33 else muted_colours(rng, 1)[0]
        length = float(np.hypot(*(end - start)))
        along = np.linspace(0.0, 1.0, int(2 * length) + 2)[:, None]
        across = np.linspace(-width / 2, width / 2, int(2 * width) + 1)[None, :]
        normal = np.array([start[1] - end[1], end[0] - start[0]]) / max(length, 1e-6)
        xs = start[0] + along * (end[0] - start[0]) + across * normal[0]
        ys = start[1] + along * (end[1] - start[1]) + across * normal[1]
        inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
        canvas[ys[inside].astype(np.int64), xs[inside].astype(np.int64)] = colour


def make_noise_tile(size: int, seed: int = 0) -> np.ndarray:
    """A fixed [2S, 2S, 3] standard-normal tile; each image adds a random crop of it as sensor noise
    (drawing fresh per-pixel normals would cost more than the rest of the scene)."""
    return np.random.default_rng(seed).standard_normal((2 * size, 2 * size, 3), dtype=np.float32)


def finish_image(canvas: np.ndarray, noise_tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise to a canvas [S, S, 3] (overwritten) and return the uint8 image [S, S, 3]."""
    size = canvas.shape[0]
    top, left = rng.integers(0, size, 2)
    strength = np.float32(rng.uniform(1.0, 10.0))
    # canvas + strength * noise, computed in place (a full-size temporary costs more than the arithmetic)
    canvas /= strength
    canvas += noise_tile[top:top + size, left:left + size]
    canvas *= strength
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def sample_appearance(rng: np.random.Generator, colour: str, size_word: str,
                      image_size: int) -> tuple[float, float, tuple[float, float, float]]:
    """Radius (px), rotation (rad) and jittered RGB of an object; "small" and "large" radii never overlap."""
    low, high = (0.045, 0.07) if size_word == "small" else (0.10, 0.15)
    radius = float(rng.uniform(low, high) * image_size)
    angle = float(rng.uniform(0, 2 * np.pi))
    rgb = np.clip(np.asarray(COLOURS[colour], dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)
    return radius, angle, (float(rgb[0]), float(rgb[1]), float(rgb[2]))
