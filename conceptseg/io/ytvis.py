"""Writing video concept segmentation results: YT-VIS results JSON, and per-frame PNG label maps.

The JSON is what conceptseg.io.saco_video.read_video_predictions reads (and video evaluation scores): a list
with one record per (video_id, category_id, track):
  {video_id, category_id, track_id, score, segmentations[T] (compressed RLE or null), bboxes[T] (xywh pixels
   or null), areas[T] (pixels or null)}
with T the number of frames of the video and null wherever the track is absent.

Memory stays bounded: YtvisWriter spools each frame's results to a temporary JSON-lines file next to the
output as they arrive, so RAM holds one frame's masks, and close() streams the final file from the spool
(holding one RLE, plus a few numbers per (track, frame), at a time).
"""

from __future__ import annotations

import json
import math
import os
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
from pycocotools import mask as mask_utils

from conceptseg.io.atomic import atomic_open, temporary_sibling
from conceptseg.io.rle import encode_mask

PathLike = str | os.PathLike


class YtvisWriter:
    """YT-VIS results of one video, written frame by frame; `close()` writes `path` atomically.

    num_frames: the video's length T, if known; else T is the last frame index added + 1. Frames never added
    (skipped corrupt frames, a stream that ended) are null in every record.

    Choices:
      * Tracks are told apart by (track id, category id): one track found for two phrases gives two records.
      * A track's score is the mean of its per-frame scores over the frames where it is present (the masklet's
        average confidence; evaluation keeps masklets scoring over 0.5).
      * An empty mask means the track is absent from that frame (null), and its score there does not count; a
        track never present gets no record.
      * Adding the same frame again replaces that frame's results entirely (last write wins), e.g. the prompted
        frame seen again by a backward pass.
    Use it as a context manager: an exception inside the block aborts (the spool is removed and `path` is left
    as it was) instead of writing a partial file.
    """

    def __init__(self, path: PathLike, video_id: int, num_frames: int | None = None):
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        self.path, self.video_id, self.num_frames = Path(path), int(video_id), num_frames
        self.size: tuple[int, int] | None = None  # (H, W) of every mask
        self._spool_path = temporary_sibling(self.path, suffix=".spool.jsonl")
        self._spool = open(self._spool_path, "x")
        self._latest: dict[int, int] = {}  # frame index -> number of the add_frame call that wrote it last
        self._calls = 0

    def add_frame(
        self, frame_index: int, track_ids: Sequence[int], category_ids: Sequence[int], masks: np.ndarray,
        scores: Sequence[float],
    ) -> None:
        """Record one frame: N tracks with their category ids, masks [N, H, W] bool (or 0/1 integers) at the
        video's size, and scores [N] in [0, 1]."""
        if self._spool is None:
            raise ValueError(f"the results writer for {str(self.path)!r} is closed")
        where = f"{self.path.name}: frame {frame_index}"
        masks = np.asarray(masks)
        entries = _frame_entries(where, track_ids, category_ids, masks, scores)
        if not isinstance(frame_index, (int, np.integer)) or frame_index < 0:
            raise ValueError(f"{where}: the frame index must be an integer >= 0")
        if self.num_frames is not None and frame_index >= self.num_frames:
            raise ValueError(f"{where}: the video has {self.num_frames} frames (indices 0 to {self.num_frames - 1})")
        if self.size is None:
            self.size = masks.shape[1:]
        elif masks.shape[1:] != self.size:
            raise ValueError(f"{where}: masks are {masks.shape[2]}x{masks.shape[1]} but earlier frames' are "
                             f"{self.size[1]}x{self.size[0]}; every frame of a video must have the same size")
        self._calls += 1
        self._latest[int(frame_index)] = self._calls
        for track_id, category_id, mask, score in entries:
            if not mask.any():
                continue  # absent from this frame
            rle = encode_mask(mask)
            box = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).tolist()
            line = [int(frame_index), self._calls, track_id, category_id, score, rle["counts"], box, int(mask.sum())]
            self._spool.write(json.dumps(line) + "\n")

    def close(self) -> Path:
        """Write the results file (atomically) and remove the spool; returns `path`."""
        if self._spool is None:
            return self.path
        try:
            self._spool.close()
            tracks = self._index_spool()
            num_frames = self.num_frames or (max(self._latest) + 1 if self._latest else 0)
            with open(self._spool_path, "rb") as spool, atomic_open(self.path) as output:
                output.write("[")
                for n, (key, track) in enumerate(sorted(tracks.items())):
                    output.write(",\n" if n else "\n")
                    self._write_record(output, spool, key, track, num_frames)
                output.write("\n]\n")
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Stop without writing `path`: the spool is removed."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._spool_path.unlink(missing_ok=True)

    def __enter__(self) -> YtvisWriter:
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if error_type is None:
            self.close()
        else:
            self.abort()

    def _index_spool(self) -> dict[tuple[int, int], _Track]:
        """One pass over the spool: where each track's current entries are (frame, line offset) and its score."""
        tracks: dict[tuple[int, int], _Track] = {}
        with open(self._spool_path, "rb") as spool:
            offset = 0
            for line in spool:
                frame, call, track_id, category_id, score = json.loads(line)[:5]
                if self._latest[frame] == call:  # else the frame was added again later
                    track = tracks.setdefault((track_id, category_id), _Track())
                    track.frames.append(frame)
                    track.offsets.append(offset)
                    track.score_sum += score
                offset += len(line)
        return tracks

    def _write_record(self, output, spool, key: tuple[int, int], track: _Track, num_frames: int) -> None:
        track_id, category_id = key
        score = track.score_sum / len(track.frames)
        output.write(f'{{"video_id": {self.video_id}, "category_id": {category_id}, "track_id": {track_id}, '
                     f'"score": {json.dumps(score)}, "segmentations": [')
        where = dict(zip(track.frames, track.offsets))
        boxes: list[list[float] | None] = [None] * num_frames
        areas: list[int | None] = [None] * num_frames
        for frame in range(num_frames):
            if frame in where:
                spool.seek(where[frame])
                counts, boxes[frame], areas[frame] = json.loads(spool.readline())[5:]
                output.write(json.dumps({"size": list(self.size), "counts": counts}))
            else:
                output.write("null")
            if frame < num_frames - 1:
                output.write(", ")
        output.write(f'], "bboxes": {json.dumps(boxes)}, "areas": {json.dumps(areas)}}}')


class _Track:
    """Where one track's entries are in the spool: compact arrays, a few bytes per (track, frame)."""

    def __init__(self):
        self.frames = array("q")
        self.offsets = array("q")
        self.score_sum = 0.0


def _frame_entries(
    where: str, track_ids: Sequence[int], category_ids: Sequence[int], masks: np.ndarray, scores: Sequence[float]
) -> list[tuple[int, int, np.ndarray, float]]:
    """Check one frame's results; returns (track_id, category_id, mask [H, W] bool, score) per track."""
    if masks.ndim != 3 or not (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer)):
        raise ValueError(f"{where}: masks must be bool [N, H, W], got {masks.dtype} {list(masks.shape)} (threshold "
                         "probabilities or logits first)")
    if not len(track_ids) == len(category_ids) == len(scores) == len(masks):
        raise ValueError(f"{where}: {len(masks)} masks but {len(track_ids)} track ids, {len(category_ids)} "
                         f"category ids and {len(scores)} scores")
    entries = []
    for track_id, category_id, mask, score in zip(track_ids, category_ids, masks, scores):
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"{where}: track {track_id} has score {score}")
        entries.append((int(track_id), int(category_id), mask.astype(bool, copy=False), score))
    if len({entry[:2] for entry in entries}) < len(entries):
        raise ValueError(f"{where}: the same (track id, category id) appears twice")
    return entries


def write_frame_masks_png(
    folder: PathLike, frame_index: int, track_ids: Sequence[int], masks: np.ndarray
) -> Path:
    """Write one frame's tracks as a label map `folder/{frame_index:05d}.png`: pixel value = track id, 0 =
    background. Track ids must be 1 to 65535; the PNG is 8-bit when every id is at most 255, else 16-bit
    (so one video may mix both). Where masks overlap, the later track in the list is drawn on top.
    masks: [N, H, W] bool. Written atomically; returns the path."""
    masks = np.asarray(masks).astype(bool, copy=False)
    if masks.ndim != 3 or len(masks) != len(track_ids):
        raise ValueError(f"frame {frame_index}: masks must be [N, H, W] for {len(track_ids)} track ids, "
                         f"got {list(masks.shape)}")
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 1 or ids.max() > 65535):
        raise ValueError(f"frame {frame_index}: track ids must be 1 to 65535 for a PNG label map (0 is the "
                         f"background), got {ids.min()} to {ids.max()}")
    labels = np.zeros(masks.shape[1:], dtype=np.uint8 if not ids.size or ids.max() <= 255 else np.uint16)
    for track_id, mask in zip(ids, masks):
        labels[mask] = track_id
    path = Path(folder) / f"{int(frame_index):05d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        PIL.Image.fromarray(labels).save(handle, format="PNG")
    return path
