"""Video mode of the concept world: objects glide and spin across a static background, pass behind one
another and enter or leave the frame. Track ids are positions in the clip's object list; an object keeps
its painting depth for the whole clip, so occlusions follow from the motion alone.

Unlike still images there is no minimum visible *fraction*: a track is labelled in every frame where at
least `min_visible_pixels` of it show (masklets may be heavily occluded for a while, as in VEval). In
frames where fewer pixels would show, the object is not painted at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conceptseg.data.synthetic_phrases import Concept, ObjectAttributes
from conceptseg.data.synthetic_render import (
    Placement,
    compose_owners,
    empty_shape_mask,
    finish_image,
    paint_objects,
    sample_appearance,
    shape_mask,
    visible_masks_and_boxes,
)

_NO_SHAPE = empty_shape_mask()


@dataclass
class RenderedClip:
    """Frames uint8 [T, H, W, 3] and, per visible track, masks bool [M, T, H, W], xyxy boxes float32
    [M, T, 4] (NaN where the track is absent) and centres float32 [M, T, 2] (x, y px, maybe off-image)."""

    frames: np.ndarray
    instances: list[ObjectAttributes]
    instance_masks: np.ndarray
    instance_boxes: np.ndarray
    centres: np.ndarray


@dataclass
class VideoSample(RenderedClip):
    """A clip with one phrase; `target_indices` (int64 [N]) are the tracks the phrase refers to."""

    phrase: str
    concept: Concept
    kind: str
    target_indices: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        """bool [N, T, H, W]: masklets of the tracks the phrase refers to."""
        return self.instance_masks[self.target_indices]

    @property
    def boxes(self) -> np.ndarray:
        """float32 [N, T, 4]: xyxy px boxes of the referred tracks, NaN where a track is absent."""
        return self.instance_boxes[self.target_indices]


MOTIONS: tuple[str, ...] = ("straight", "bouncing")
BOUNCE_SPEED = 0.025  # slowest bouncing speed, a fraction of the side per frame
BOUNCE_GAP = 0.2  # bouncing walls stand this fraction of the side beyond where an object has fully left


def sample_trajectories(rng: np.random.Generator, objects: list[ObjectAttributes], size: int,
                        num_frames: int, motion: str = "straight") -> list[list[Placement]]:
    """Per object, its placement in each frame: straight-line motion at up to 4% of the image side per
    frame with a steady spin. Each object is inside the image at a random frame, so objects near the border
    or moving fast enter or leave during the clip.

    motion="bouncing": the same motion sped up to at least `BOUNCE_SPEED` of the side per frame and folded
    between walls `BOUNCE_GAP` of the side beyond where each object has fully left the image, so objects
    that leave come back (after 2 * gap / speed frames or more): long absences and re-entries, which
    straight lines rarely give.
    """
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {motion!r}")
    trajectories = []
    frames = np.arange(num_frames)
    for obj in objects:
        radius, angle, rgb = sample_appearance(rng, obj.colour, obj.size, size)
        seen_at, seen_where = rng.integers(num_frames), rng.uniform(0.05 * size, 0.95 * size, 2)
        heading, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.04 * size)
        spin = rng.uniform(-0.15, 0.15)
        if motion == "bouncing":
            speed = max(speed, BOUNCE_SPEED * size)
        xs = seen_where[0] + (frames - seen_at) * speed * np.cos(heading)
        ys = seen_where[1] + (frames - seen_at) * speed * np.sin(heading)
        if motion == "bouncing":
            low = -radius - BOUNCE_GAP * size
            xs, ys = _reflect(xs, low, size - low), _reflect(ys, low, size - low)
        trajectories.append([
            Placement(obj.shape, obj.pattern, rgb, float(x), float(y), radius, angle + t * spin)
            for t, (x, y) in enumerate(zip(xs, ys))
        ])
    return trajectories


def _reflect(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """`values` folded into [low, high] like a ball bouncing between two walls."""
    span = high - low
    phase = np.mod(values - low, 2 * span)
    return low + np.where(phase <= span, phase, 2 * span - phase)


def render_clip(rng: np.random.Generator, objects: list[ObjectAttributes],
                trajectories: list[list[Placement]], background: np.ndarray, noise_tile: np.ndarray,
                num_frames: int, min_visible_pixels: int) -> RenderedClip:
    """Paint every frame over a background canvas [S, S, 3]; tracks never visible are dropped."""
    size = background.shape[0]
    count = len(objects)
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    masks = np.zeros((count, num_frames, size, size), dtype=bool)
    boxes = np.full((count, num_frames, 4), np.nan, dtype=np.float32)
    canvas = np.empty_like(background)
    for t in range(num_frames):
        placements = [trajectory[t] for trajectory in trajectories]
        shapes = [shape_mask(placement) for placement in placements]
        owners = compose_owners(shapes, size)
        shown = np.bincount(owners.ravel() + 1, minlength=count + 1)[1:] >= min_visible_pixels
        if not shown.all():
            shapes = [shape if keep else _NO_SHAPE for shape, keep in zip(shapes, shown)]
            owners = compose_owners(shapes, size)
        np.copyto(canvas, background)
        paint_objects(canvas, owners, placements, shapes)
        frames[t] = finish_image(canvas, noise_tile, rng)
        masks[:, t], frame_boxes = visible_masks_and_boxes(owners, shapes)
        boxes[shown, t] = frame_boxes[shown]
    centres = np.array([[(p.centre_x, p.centre_y) for p in trajectory] for trajectory in trajectories],
                       dtype=np.float32).reshape(count, num_frames, 2)
    present = masks.any(axis=(1, 2, 3))
    instances = [obj for obj, keep in zip(objects, present) if keep]
    return RenderedClip(frames=frames, instances=instances, instance_masks=masks[present],
                        instance_boxes=boxes[present], centres=centres[present])
