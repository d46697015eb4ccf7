"""Overlays: one stable colour per instance or track id, tracks drawn on a frame, and overlay videos encoded one
frame at a time with PyAV (`pip install 'conceptseg[video]'`)."""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw

from conceptseg.io.atomic import commit, temporary_sibling
from conceptseg.io.images import array_to_rgb
from conceptseg.io.video import require_av


def instance_colour(index: int) -> tuple[int, int, int]:
    """RGB colour of an instance index or track id: golden-ratio steps around the hue circle, so consecutive
    ids are well separated and one id always gets the same colour (in every frame, in every run)."""
    red, green, blue = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.75, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_tracks(
    frame: np.ndarray, track_ids: Sequence[int], masks: np.ndarray, boxes: np.ndarray | None = None,
    labels: Sequence[str] | str | None = None, scores: Sequence[float] | None = None, alpha: float = 0.5,
) -> np.ndarray:
    """Overlay tracked instances on one frame; returns a new RGB uint8 [H, W, 3] image.

    Each track is drawn in instance_colour(track id), so it keeps its colour from frame to frame, with its box
    and the label "id: phrase score". frame: RGB image [H, W, 3] (any image of the one image rule); track_ids:
    [N] ints; masks: [N, H, W] bool; boxes: [N, 4] XYXY pixels, or None for each mask's extent (a track with
    an empty mask and no box gets no label); labels: N phrases, one phrase for all, or None; scores: [N] or None.
    """
    frame = array_to_rgb(np.asarray(frame))
    masks = np.asarray(masks).astype(bool, copy=False)
    count = len(track_ids)
    if masks.shape != (count, *frame.shape[:2]):
        raise ValueError(f"masks must be [N, H, W] = {[count, *frame.shape[:2]]} for {count} track ids on a "
                         f"{frame.shape[1]}x{frame.shape[0]} frame, got {list(masks.shape)}")
    per_track = (("boxes", boxes), ("labels", None if isinstance(labels, str) else labels), ("scores", scores))
    for name, values in per_track:
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} track ids")
    canvas = frame.astype(np.float32)
    labelled = []
    for k, track_id in enumerate(track_ids):
        colour = instance_colour(int(track_id))
        canvas[masks[k]] = canvas[masks[k]] * (1 - alpha) + np.array(colour, dtype=np.float32) * alpha
        box = boxes[k] if boxes is not None else _mask_box(masks[k])
        if box is None:
            continue
        phrase = labels if isinstance(labels, str) else (labels[k] if labels is not None else "")
        score = "" if scores is None else f"{float(scores[k]):.2f}"
        details = " ".join(part for part in (phrase, score) if part)
        labelled.append((box, f"{int(track_id)}: {details}" if details else str(int(track_id)), colour))
    return draw_labelled_boxes(canvas.round().clip(0, 255).astype(np.uint8), labelled)


def draw_labelled_boxes(image: np.ndarray, labelled: Iterable[tuple]) -> np.ndarray:
    """Draw (box XYXY pixels, text, RGB colour) triples on an RGB uint8 image: the box outline, and the text on a
    patch of the colour above the box (inside the image)."""
    overlay = PIL.Image.fromarray(image)
    draw = PIL.ImageDraw.Draw(overlay)
    for box, text, colour in labelled:
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=2)
        left, top, right, bottom = draw.textbbox((x1, y1), text)
        y_text = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle((x1, y_text, x1 + right - left + 2, y_text + bottom - top + 2), fill=colour)
        draw.text((x1 + 1, y_text), text, fill=(0, 0, 0))
    return np.asarray(overlay)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


class VideoWriter:
    """Encode RGB uint8 [H, W, 3] frames one at a time into a video file: MP4 (or the format of `path`'s suffix)
    in H.264 when this PyAV build has an encoder for it, else MPEG-4 part 2; `codec` forces one.

    Atomic: frames go to a hidden temporary file next to `path`, which close() moves over `path`; abort(), or an
    exception inside a `with` block, removes it and leaves `path` as it was. size is (H, W); the yuv420p pixel
    format needs even sides, so an odd height or width is padded by one row or column of repeated edge pixels.
    """

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], codec: str | None = None):
        self._av = require_av()
        if not fps > 0 or min(size) < 1:
            raise ValueError(f"a video needs fps > 0 and a size of at least 1x1, got fps={fps}, size={size}")
        self.path, self.size, self.frames_written = Path(path), (int(size[0]), int(size[1])), 0
        self._temporary = temporary_sibling(self.path, suffix=self.path.suffix or ".mp4")
        try:
            self._container = self._av.open(str(self._temporary), "w")
            rate = Fraction(float(fps)).limit_denominator(1001)  # 29.97 -> 2997/100, 30000/1001 stays exact
            self._stream = self._container.add_stream(codec or default_codec(), rate=rate)
        except (self._av.error.FFmpegError, ValueError) as error:
            self._temporary.unlink(missing_ok=True)
            raise ValueError(f"cannot write video {str(self.path)!r}: {error}") from error
        self._stream.height, self._stream.width = (side + side % 2 for side in self.size)
        self._stream.pix_fmt = "yuv420p"

    def write(self, frame: np.ndarray) -> None:
        """Encode one RGB uint8 [H, W, 3] frame of the writer's size."""
        if self._container is None:
            raise ValueError(f"video {str(self.path)!r} is already closed")
        if frame.dtype != np.uint8 or frame.shape != (*self.size, 3):
            raise ValueError(f"frame {self.frames_written}: expected RGB uint8 {[*self.size, 3]}, got "
                             f"{frame.dtype} {list(frame.shape)}")
        frame = np.pad(frame, ((0, self.size[0] % 2), (0, self.size[1] % 2), (0, 0)), mode="edge")
        for packet in self._stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder and move the finished file over `path`. ValueError if no frame was written."""
        if self._container is None:
            return self.path
        try:
            if self.frames_written == 0:
                raise ValueError(f"no frames were written to video {str(self.path)!r}")
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            self._container = None
            return commit(self._temporary, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop without writing `path`: the temporary file is removed."""
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except self._av.error.FFmpegError:
                pass
        self._temporary.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()


def default_codec() -> str:
    """"libx264" (H.264) if this PyAV build can encode it, else "mpeg4" (MPEG-4 part 2, always built in)."""
    av = require_av()
    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except (av.error.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        return "mpeg4"


def write_overlay_video(
    path: str | os.PathLike, frames: Iterable, tracks: Iterable[dict], fps: float, alpha: float = 0.5
) -> Path:
    """Draw each frame's tracks (conceptseg.io.overlay.draw_tracks) and encode the result, one frame at a time.

    frames: RGB images, or the (index, frame) pairs of a FrameSource; tracks: for each frame, in the same order,
    the keyword arguments of draw_tracks (track_ids, masks, and optionally boxes, labels, scores). Each track id
    keeps one colour in every frame.
    """
    writer = None
    try:
        for item, drawn in zip(frames, tracks, strict=True):
            frame = item[1] if isinstance(item, tuple) else item
            image = draw_tracks(frame, **drawn, alpha=alpha)
            writer = writer or VideoWriter(path, fps, image.shape[:2])
            writer.write(image)
        if writer is None:
            raise ValueError(f"no frames to write to {str(path)!r}")
        return writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise

