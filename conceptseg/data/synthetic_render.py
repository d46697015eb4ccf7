"""Numpy rasteriser for the synthetic concept world: shapes, fill patterns, backgrounds, occlusion.

Images are built as float32 canvases [H, W, 3] and converted to uint8 at the end. Shapes are drawn without
anti-aliasing so that every instance mask is exactly the set of pixels the object paints (outline strokes
included). Pixel (row i, column j) has its centre at (x, y) = (j + 0.5, i + 0.5). Shape geometry lives in
`synthetic_shapes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from conceptseg.data.synthetic_phrases import COLOURS, ObjectAttributes
from conceptseg.data.synthetic_shapes import Drawing, erode, inside

# Scale of a pattern's darker paint relative to the object's colour.
_PATTERN_SHADE = 0.45
# Radius ranges (fractions of the image scale) of "small" and "large" objects; the wide ones for
# `Variety.scale`. In both the two sizes never overlap, so the size words stay unambiguous.
_RADII = {"small": (0.045, 0.07), "large": (0.10, 0.15)}
_WIDE_RADII = {"small": (0.035, 0.075), "large": (0.095, 0.17)}


@dataclass(frozen=True)
class Stroke:
    """A stroke `width` px wide along an object's border, painted at `shade` times the object's colour;
    a hollow object is the stroke alone."""

    width: int
    shade: float
    hollow: bool = False


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
    drawing: Drawing | None = None  # None: the shape's default drawing
    stroke: Stroke | None = None


@dataclass(frozen=True)
class ShapeMask:
    """An object's full (unoccluded, unclipped) mask on its pixel window, whose corner is at (top, left),
    with the window's rotated shape coordinates u, v (float32 [h, w], radius units) for painting and the
    pixels of its stroke, if it has one."""

    top: int
    left: int
    mask: np.ndarray  # bool [h, w]
    u: np.ndarray
    v: np.ndarray
    stroke: np.ndarray | None = None  # bool [h, w]

    def clipped(self, image_height: int, image_width: int) -> tuple[slice, slice, slice, slice]:
        """Image (rows, cols) slices covered by the window inside the image, and the matching (rows, cols)
        slices of the window."""
        height, width = self.mask.shape
        y0, x0 = max(self.top, 0), max(self.left, 0)
        y1 = max(min(self.top + height, image_height), y0)
        x1 = max(min(self.left + width, image_width), x0)
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


def shape_mask(placement: Placement) -> ShapeMask:
    """Rasterise one object's full shape (ignoring occlusion and the image border)."""
    top, left, u, v = _local_coordinates(placement)
    full = inside(placement.shape, placement.drawing, u, v)
    if placement.stroke is None:
        return ShapeMask(top, left, full, u, v)
    stroke = full & ~erode(full, placement.stroke.width)
    return ShapeMask(top, left, stroke if placement.stroke.hollow else full, u, v, stroke)


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


def compose_owners(masks: list[ShapeMask], image_shape: int | tuple[int, int]) -> np.ndarray:
    """Painter's algorithm on labels: int16 [H, W] index of the top-most object per pixel, -1 = background.
    `image_shape` is (H, W), or the side of a square image."""
    height, width = (image_shape, image_shape) if isinstance(image_shape, int) else image_shape
    owners = np.full((height, width), -1, dtype=np.int16)
    for index, shape in enumerate(masks):
        rows, cols, local_rows, local_cols = shape.clipped(height, width)
        owners[rows, cols][shape.mask[local_rows, local_cols]] = index
    return owners


def visible_masks_and_boxes(owners: np.ndarray, masks: list[ShapeMask]) -> tuple[np.ndarray, np.ndarray]:
    """Visible masks bool [N, H, W] and their tight boxes float32 [N, 4] (x0, y0, x1, y1 px, x1/y1
    exclusive, i.e. the pixel-edge box COCO's toBbox gives)."""
    visible = np.zeros((len(masks), *owners.shape), dtype=bool)
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for index, shape in enumerate(masks):
        rows, cols, _, _ = shape.clipped(*owners.shape)
        region = owners[rows, cols] == index
        visible[index, rows, cols] = region
        ys, xs = np.nonzero(region.any(axis=1))[0], np.nonzero(region.any(axis=0))[0]
        if len(ys):
            x0, y0 = cols.start + xs[0], rows.start + ys[0]
            boxes[index] = (x0, y0, cols.start + xs[-1] + 1, rows.start + ys[-1] + 1)
    return visible, boxes


def paint_objects(canvas: np.ndarray, owners: np.ndarray, placements: list[Placement],
                  masks: list[ShapeMask]) -> None:
    """Paint each object's visible pixels (per `owners`) onto a canvas [H, W, 3] in place."""
    for index, (placement, shape) in enumerate(zip(placements, masks)):
        rows, cols, local_rows, local_cols = shape.clipped(*owners.shape)
        region = owners[rows, cols] == index
        if region.any():
            u, v = shape.u[local_rows, local_cols][region], shape.v[local_rows, local_cols][region]
            paint = object_paint(placement, u, v)
            if shape.stroke is not None and placement.stroke.shade != 1.0:
                paint[shape.stroke[local_rows, local_cols][region]] *= placement.stroke.shade
            canvas[rows, cols][region] = paint


def muted_colours(rng: np.random.Generator, count: int) -> np.ndarray:
    """Low-saturation background colours [count, 3] float32 in 0..255 (never mistaken for a named colour)."""
    hue = rng.random(count, dtype=np.float32)
    saturation = rng.uniform(0.0, 0.3, count).astype(np.float32)
    value = rng.uniform(0.2, 0.9, count).astype(np.float32)
    pure = np.clip(np.abs(np.mod(hue[:, None] * 6 + np.array([0, 4, 2], np.float32), 6) - 3) - 1, 0, 1)
    return 255 * value[:, None] * (1 - saturation[:, None] + saturation[:, None] * pure)


def _interpolation(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel along one axis: the grid cells below and above it and the weight of the one above."""
    position = np.clip((np.arange(size, dtype=np.float32) + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = position.astype(np.int64)
    return low, np.minimum(low + 1, cells - 1), position - low.astype(np.float32)


def _smooth_field(grid: np.ndarray, out: np.ndarray) -> None:
    """Bilinear upsampling (pixel-centre aligned, edges clamped) of a grid [k, k, C] into out [H, W, C].
    Works band by band between grid rows so that no full-size temporary is allocated: on this kind of
    machine the page faults of a fresh image-sized array cost more than the arithmetic."""
    cells = grid.shape[0]
    low_x, high_x, weight_x = _interpolation(out.shape[1], cells)
    low_y, _, weight_y = _interpolation(out.shape[0], cells)
    columns = grid[:, low_x] + (grid[:, high_x] - grid[:, low_x]) * weight_x[:, None]  # [k, W, C]
    steps = columns[np.minimum(np.arange(cells) + 1, cells - 1)] - columns
    bounds = np.searchsorted(low_y, np.arange(cells + 1))  # rows bounds[i]:bounds[i+1] lie after grid row i
    for row in range(cells):
        band = slice(bounds[row], bounds[row + 1])
        np.multiply(weight_y[band, None, None], steps[row], out=out[band])
        out[band] += columns[row]


def render_background(rng: np.random.Generator, canvas: np.ndarray) -> str:
    """Fill a float32 canvas [H, W, 3] with a flat, gradient, blotchy or two-tone cluttered background,
    sometimes crossed by distractor strokes; returns which kind. Colour vectors are never broadcast per
    pixel: numpy's loops over a trailing axis of 3 are very slow, so fills go row-wise or channel by
    channel."""
    height, width = canvas.shape[:2]
    style = rng.integers(4)
    if style == 0:  # flat
        canvas.reshape(height, width * 3)[:] = np.tile(muted_colours(rng, 1)[0], width)
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
        mix_colours(canvas, weight[..., 0], *muted_colours(rng, 2))
    if rng.random() < 0.5:
        draw_strokes(canvas, rng, int(rng.integers(1, 7)))
    return _BACKGROUND_KINDS[style]


_BACKGROUND_KINDS = ("flat", "gradient", "blotches", "clutter")


def mix_colours(canvas: np.ndarray, weight: np.ndarray, first: np.ndarray, second: np.ndarray) -> None:
    """canvas = weight * first + (1 - weight) * second, channel by channel; `weight` [H, W] may be the
    canvas's red channel (it is painted last)."""
    for channel in (2, 1, 0):
        np.multiply(weight, first[channel] - second[channel], out=canvas[..., channel])
        canvas[..., channel] += second[channel]


TEXTURE_KINDS = ("grain", "stripes", "dots", "checker")


def render_texture(rng: np.random.Generator, canvas: np.ndarray, kind: str) -> None:
    """Fill a float32 canvas [H, W, 3] with a textured background in muted colours, sometimes crossed by
    distractor strokes: fine grain on a gradient, stripes (soft sinusoid or hard), a dot lattice, or a
    checkerboard of tiles (the kind `Variety(styles="heldout")` keeps for itself)."""
    height, width = canvas.shape[:2]
    xs, ys = np.arange(width, dtype=np.float32) + 0.5, np.arange(height, dtype=np.float32) + 0.5
    weight = canvas[..., 0]  # holds the mixing weight until mix_colours paints the red channel last
    if kind == "grain":
        _smooth_field(muted_colours(rng, 4).reshape(2, 2, 3), canvas)
        grain = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(6, 18))
        for channel in range(3):
            canvas[..., channel] += grain
    elif kind == "stripes":
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(6, 32), rng.uniform(0, 2 * np.pi)
        along_x = (xs * (2 * np.pi * np.cos(angle) / period) + phase).astype(np.float32)
        along_y = (ys * (2 * np.pi * np.sin(angle) / period)).astype(np.float32)
        # sin(a + b) as two outer products: no per-pixel trigonometry
        np.add(np.outer(np.cos(along_y), np.sin(along_x)), np.outer(np.sin(along_y), np.cos(along_x)),
               out=weight)
        if rng.random() < 0.5:
            np.greater(weight, 0, out=weight, casting="unsafe")
        else:
            weight *= 0.5
            weight += 0.5
        mix_colours(canvas, weight, *muted_colours(rng, 2))
    elif kind == "dots":
        spacing = rng.uniform(8, 24)
        dot = np.float32((rng.uniform(0.15, 0.35) * spacing) ** 2)
        off_x, off_y = rng.uniform(0, spacing, 2)
        fx = np.mod(xs + off_x, spacing) - spacing / 2
        fy = np.mod(ys + off_y, spacing) - spacing / 2
        np.less_equal(np.add.outer(fy * fy, fx * fx), dot, out=weight, casting="unsafe")
        mix_colours(canvas, weight, *muted_colours(rng, 2))
    elif kind == "checker":
        tile = rng.uniform(8, 32)
        off_x, off_y = rng.uniform(0, 2 * tile, 2)
        parity = np.add.outer(np.floor((ys + off_y) / tile), np.floor((xs + off_x) / tile)) % 2
        weight[:] = parity
        mix_colours(canvas, weight, *muted_colours(rng, 2))
    else:
        raise ValueError(f"unknown texture {kind!r}; choose one of {TEXTURE_KINDS}")
    if rng.random() < 0.5:
        draw_strokes(canvas, rng, int(rng.integers(1, 7)))


def draw_strokes(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Thin distractor line segments; a third use a named colour so colour alone never means "object".
    A stroke is stamped as a dense set of points across its width (cheaper than distances per pixel)."""
    height, width = canvas.shape[:2]
    named = np.asarray(list(COLOURS.values()), dtype=np.float32)
    for _ in range(count):
        start, end = rng.uniform(0, (width, height)), rng.uniform(0, (width, height))  # (x, y)
        thickness = rng.uniform(1.0, 3.0)
        colour = named[rng.integers(len(named))] if rng.random() < 0.33 else muted_colours(rng, 1)[0]
        length = float(np.hypot(*(end - start)))
        along = np.linspace(0.0, 1.0, int(2 * length) + 2)[:, None]
        across = np.linspace(-thickness / 2, thickness / 2, int(2 * thickness) + 1)[None, :]
        normal = np.array([start[1] - end[1], end[0] - start[0]]) / max(length, 1e-6)
        xs = start[0] + along * (end[0] - start[0]) + across * normal[0]
        ys = start[1] + along * (end[1] - start[1]) + across * normal[1]
        shown = (xs >= 0) & (xs < width) & (ys >= 0) & (ys < height)
        canvas[ys[shown].astype(np.int64), xs[shown].astype(np.int64)] = colour


def make_noise_tile(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A fixed [2H, 2W, 3] standard-normal tile; each image (up to H x W) adds a random crop of it as sensor
    noise (drawing fresh per-pixel normals would cost more than the rest of the scene)."""
    return np.random.default_rng(seed).standard_normal((2 * height, 2 * width, 3), dtype=np.float32)


def finish_image(canvas: np.ndarray, noise_tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add sensor noise to a canvas [H, W, 3] (overwritten) and return the uint8 image [H, W, 3]."""
    height, width = canvas.shape[:2]
    top, left = rng.integers(0, (height, width))
    strength = np.float32(rng.uniform(1.0, 10.0))
    # canvas + strength * noise, computed in place (a full-size temporary costs more than the arithmetic)
    canvas /= strength
    canvas += noise_tile[top:top + height, left:left + width]
    canvas *= strength
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def sample_appearance(rng: np.random.Generator, colour: str, size_word: str, image_size: float,
                      wide: bool = False) -> tuple[float, float, tuple[float, float, float]]:
    """Radius (px), rotation (rad) and jittered RGB of an object; "small" and "large" radii never overlap.
    `image_size` is the image scale, sqrt(height * width); `wide` picks the wider radius ranges."""
    low, high = (_WIDE_RADII if wide else _RADII)[size_word]
    radius = float(rng.uniform(low, high) * image_size)
    angle = float(rng.uniform(0, 2 * np.pi))
    rgb = np.clip(np.asarray(COLOURS[colour], dtype=np.float64) + rng.uniform(-12, 12, 3), 0, 255)
    return radius, angle, (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def place_objects(rng: np.random.Generator, objects: list[ObjectAttributes], height: int, width: int,
                   wide: bool = False) -> list[Placement]:
    """Random placements. Most objects get a few tries to stay off other objects' centres, so that
    occlusion is common but rarely total; a quarter land anywhere, which gives some heavy occlusion.
    `wide` picks the wider radius ranges of `Variety.scale`."""
    placements: list[Placement] = []
    scale = math.sqrt(height * width)
    for obj in objects:
        radius, angle, rgb = sample_appearance(rng, obj.colour, obj.size, scale, wide)
        for _ in range(8 if rng.random() < 0.75 else 1):
            centre_x, centre_y = rng.uniform((0.03 * width, 0.03 * height), (0.97 * width, 0.97 * height))
            if all(np.hypot(centre_x - p.centre_x, centre_y - p.centre_y) >= 0.7 * (radius + p.radius)
                   for p in placements):
                break
        placements.append(Placement(obj.shape, obj.pattern, rgb, float(centre_x), float(centre_y), radius,
                                    angle))
    return placements
