"""Video frames, read lazily: one decoded frame in memory at a time (overlay videos: conceptseg.io.overlay).

`open_frames(source)` accepts:
  * a video file, decoded with PyAV (`pip install 'conceptseg[video]'`);
  * a folder of image files (IMAGE_SUFFIXES; hidden files ignored), in natural name order: 2.png before 10.png;
  * frames already in memory: a list or tuple of images, or a [T, H, W(, C)] numpy array (random access);
  * any other iterable or iterator of images (numpy arrays or PIL images): a live stream of unknown length,
    read once and forwards only.
Every frame goes through the one image rule (conceptseg.io.images) and comes out RGB uint8 [H, W, 3], paired
with its index: its position in the source.

Behaviour:
  * Frame size: every frame must have the size of the first. A frame of another size raises ValueError at that
    frame (earlier frames have been yielded): masks, the tracker's memory and a YT-VIS record all assume one
    size per video, and silently resizing would misplace every mask. Resize a stream that changes resolution.
  * Unreadable frames: in a folder, a frame that cannot be read (truncated, not an image, over `limits`) is
    skipped with a FrameSkippedWarning naming it, and later frames keep their true index (frame 5 stays 5).
    In a video file, a decoding error, and in memory or a stream, an item that is not an image (wrong dtype or
    shape), raise ValueError naming the frame index: there is no file name to skip by.
  * Random access, `frame(index)`: a folder or frames in memory read that frame alone; a video file seeks to
    the keyframe before it and decodes forwards (at most one keyframe interval, 250 frames with H.264's
    defaults, plus the frames past the furthest one decoded so far; a file without usable timestamps decodes
    from its start); a stream gives the current frame or reads up to STREAM_LOOKAHEAD frames ahead, never back.
  * A video file's size limits (`ImageLimits.max_pixels`, `max_side`) apply to its frames, checked from the
    stream header before decoding; `max_bytes` is for image files and does not apply to videos.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import PIL.Image

from conceptseg.io.images import DEFAULT_LIMITS, IMAGE_SUFFIXES, ImageLimits, load_image

Frame = tuple[int, np.ndarray]  # (index, RGB uint8 [H, W, 3])
STREAM_LOOKAHEAD = 16  # frames a stream's frame(index) may read ahead of the iteration (and hold in memory)


# file endings taken for videos where a folder mixes images and videos (`conceptseg label`); open_frames itself
# reads any file PyAV can decode
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class FrameSkippedWarning(UserWarning):
    """A frame of a folder could not be read and was skipped (filter or escalate it with `warnings`)."""


class FrameSource:
    """The frames of one video. Iterate for (index, RGB uint8 [H, W, 3]) pairs; `frame(index)` reads one frame.

    name: the folder name, the file's stem, or "stream"; num_frames: int when known without decoding (a folder's
    file count, the container's frame count) else None; fps: float or None; size: (H, W) of the first frame;
    seekable: whether frames already read can be read again (False for a stream).
    """

    seekable = True

    def __init__(self, name: str, num_frames: int | None, fps: float | None, limits: ImageLimits):
        self.name, self.num_frames, self.fps, self.limits = name, num_frames, fps, limits
        self._size: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Frame]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[Frame]:
        """(index, frame) pairs from frame `start` on, without decoding the frames before it where the source
        can avoid it (a video file seeks; a stream reads and drops them, and cannot start before its current
        frame)."""
        raise NotImplementedError

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` as RGB uint8 [H, W, 3]. IndexError past the end."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a stream's generator is closed); a file source holds nothing open."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *error) -> None:
        self.close()

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the first (readable) frame, read on first use."""
        if self._size is None:
            self._size = self._first_size()
        return self._size

    def _first_size(self) -> tuple[int, int]:
        raise NotImplementedError

    def _check_size(self, index: int, height: int, width: int, where: str) -> None:
        if self._size is None:  # only frame 0 may set it; a folder or list probes frame 0 when read out of order
            self._size = (height, width) if index == 0 else self._first_size()
        if (height, width) != self._size:
            raise ValueError(f"{where}: frame {index} is {width}x{height} but the first frame is {self._size[1]}x"
                             f"{self._size[0]}; every frame of a video must have the same size")

    def _load(self, index: int, item: object, where: str) -> np.ndarray:
        try:
            frame = load_image(item, self.limits)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: frame {index}: {error}") from error
        self._check_size(index, *frame.shape[:2], where)
        return frame


def open_frames(
    source: str | os.PathLike | Iterable | FrameSource, limits: ImageLimits = DEFAULT_LIMITS,
    fps: float | None = None, name: str | None = None,
) -> FrameSource:
    """A FrameSource for a video file, a folder of images, frames in memory or a stream (see the module docstring).

    fps and name override what the source says (a folder or a stream has no fps of its own). Raises ValueError
    for a missing path, a file that is not a readable video, a video without frames or an empty folder.
    """
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _FolderFrames(path, name, fps, limits)
        if path.is_file():
            return _VideoFrames(path, name, fps, limits)
        raise ValueError(f"no such video file or frame folder: {str(path)!r}")
    if isinstance(source, PIL.Image.Image):
        raise TypeError("one image is not a video: pass a list of frames, a folder or a video file")
    if isinstance(source, (np.ndarray, list, tuple)):
        return _SequenceFrames(source, name, fps, limits)
    if isinstance(source, Iterable):
        return _StreamFrames(source, name, fps, limits)
    raise TypeError(f"frames must come from a path, a FrameSource or an iterable of images, got "
                    f"{type(source).__name__}")


def natural_key(name: str) -> list:
    """Sort key that orders the digits in a name by value: "2.png" < "10.png"."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class _FolderFrames(FrameSource):
    def __init__(self, folder: Path, name: str | None, fps: float | None, limits: ImageLimits):
        self.files = sorted(
            (path for path in folder.iterdir()
             if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()),
            key=lambda path: natural_key(path.name),
        )
        if not self.files:
            raise ValueError(f"no image files ({' '.join(IMAGE_SUFFIXES)}) in frame folder {str(folder)!r}")
        super().__init__(name or folder.name, len(self.files), fps, limits)
        self.folder = folder

    def iter_from(self, start: int) -> Iterator[Frame]:
        found = False
        for index, path in enumerate(self.files[start:], start=start):
            try:
                frame = load_image(path, self.limits)
            except ValueError as error:  # names the file
                warnings.warn(f"skipped frame {index} of {self.name}: {error}", FrameSkippedWarning, stacklevel=2)
                continue
            self._check_size(index, *frame.shape[:2], str(path))
            found = True
            yield index, frame
        if not found and start == 0:
            raise ValueError(f"no readable frame in frame folder {str(self.folder)!r}")

    def frame(self, index: int) -> np.ndarray:
        """Frame `index` (reads its file; an unreadable one raises ValueError instead of being skipped)."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"frame folder {str(self.folder)!r} has {len(self.files)} frames, no frame {index}")
        return self._load(index, self.files[index], str(self.files[index]))

    def _first_size(self) -> tuple[int, int]:
        for path in self.files:  # the first file whose header reads; no pixels are decoded
            try:
                with PIL.Image.open(path) as image:
                    return image.size[1], image.size[0]
            except (OSError, ValueError):
                continue
        raise ValueError(f"no readable frame in frame folder {str(self.folder)!r}")


class _SequenceFrames(FrameSource):
    def __init__(self, frames: Sequence | np.ndarray, name: str | None, fps: float | None, limits: ImageLimits):
        if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
            raise ValueError(f"a video array must be [T, H, W] or [T, H, W, C], got shape {frames.shape}")
        if len(frames) == 0:
            raise ValueError("the video has no frames (empty list or array)")
        super().__init__(name or "frames", len(frames), fps, limits)
        self.frames = frames

    def iter_from(self, start: int) -> Iterator[Frame]:
        return ((index, self.frame(index)) for index in range(start, len(self.frames)))

    def frame(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self.frames):
            raise IndexError(f"{self.name} has {len(self.frames)} frames, no frame {index}")
        return self._load(index, self.frames[index], self.name)

    def _first_size(self) -> tuple[int, int]:
        try:
            return load_image(self.frames[0], self.limits).shape[:2]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{self.name}: frame 0: {error}") from error


class _StreamFrames(FrameSource):
    """Read once, forwards: `frame(index)` returns the frame last yielded or reads up to STREAM_LOOKAHEAD frames
    ahead (held until iterated); earlier frames are gone and raise ValueError, and so does a second iteration
    from frame 0."""

    seekable = False

    def __init__(self, frames: Iterable, name: str | None, fps: float | None, limits: ImageLimits):
        super().__init__(name or "stream", None, fps, limits)
        self._items = iter(frames)
        self._taken = 0  # items taken from the iterator so far
        self._ahead: deque[Frame] = deque()  # read by frame() or size, not yet yielded
        self._last: Frame | None = None  # the frame yielded last

    def iter_from(self, start: int) -> Iterator[Frame]:
        self._check_available(start)
        return self._frames(start)

    def _frames(self, start: int) -> Iterator[Frame]:
        if self._last is not None and self._last[0] == start:
            yield self._last
        while True:
            if not self._ahead:
                if (taken := self._take()) is None:
                    return  # a stream that ends, early or not, is simply the end
                self._ahead.append(taken)
            self._last = self._ahead.popleft()
            if self._last[0] >= start:
                yield self._last

    def frame(self, index: int) -> np.ndarray:
        self._check_available(index)
        if self._last is not None and index == self._last[0]:
            return self._last[1]
        first = self._ahead[0][0] if self._ahead else self._taken
        if index >= first + STREAM_LOOKAHEAD:
            raise ValueError(f"{self.name}: frame {index} is more than {STREAM_LOOKAHEAD} frames ahead of the "
                             f"stream (next is {first})")
        while self._taken <= index:
            if (taken := self._take()) is None:
                raise IndexError(f"{self.name} ended after {self._taken} frames, no frame {index}")
            self._ahead.append(taken)
        return self._ahead[index - first][1]

    def close(self) -> None:
        self._ahead.clear()
        if callable(close := getattr(self._items, "close", None)):  # a generator: run its cleanup now
            close()

    def _check_available(self, index: int) -> None:
        earliest = self._last[0] if self._last is not None else (self._ahead[0][0] if self._ahead else self._taken)
        if index < earliest:
            raise ValueError(f"{self.name}: frame {index} was already read, and a stream cannot seek backwards; "
                             "keep the frames you need, or read from a folder or a video file")

    def _take(self) -> Frame | None:
        try:
            item = next(self._items)
        except StopIteration:
            return None
        self._taken += 1
        return self._taken - 1, self._load(self._taken - 1, item, self.name)

    def _first_size(self) -> tuple[int, int]:
        if self._taken == 0 and (taken := self._take()) is not None:
            self._ahead.append(taken)  # sets the size
        if self._size is None:
            raise ValueError(f"{self.name}: the stream has no frames")
        return self._size


class _VideoFrames(FrameSource):
    """A video file decoded with PyAV, one frame at a time.

    Random access, `frame(index)`: opens the file, seeks to the keyframe before frame `index` and decodes forwards
    to it, so one call costs up to one keyframe interval of decoding (H.264's default is at most 250 frames)
    plus the frames past the furthest one decoded so far. Seeking uses the presentation timestamps of the frames
    already decoded (an int per frame, kept for the life of the source); a file whose timestamps are missing or
    not increasing is decoded from its start instead, which costs `index` frames. For many random reads of a
    long video, extract its frames to a folder once.
    """

    def __init__(self, path: Path, name: str | None, fps: float | None, limits: ImageLimits):
        self.path = path
        self._pts: list[int] = []  # presentation timestamp of every frame decoded so far, by index
        self._timestamps_ok = True  # every timestamp known and increasing: frames can be found by seeking
        with self._open() as container:
            if not container.streams.video:
                raise ValueError(f"{str(path)!r} has no video stream: not a video")
            stream = container.streams.video[0]
            rate = fps or stream.average_rate or stream.guessed_rate
            super().__init__(name or path.stem, stream.frames or None, float(rate) if rate else None, limits)
            if stream.codec_context.width and stream.codec_context.height:
                try:
                    limits.check(stream.codec_context.width, stream.codec_context.height)
                except ValueError as error:
                    raise ValueError(f"video {str(path)!r}: {error}") from error
        with closing(iter(self)) as frames:  # frame 0, which also sets `size`: a video must have one
            if next(frames, None) is None:
                raise ValueError(f"video {str(path)!r} has no frames")

    def iter_from(self, start: int) -> Iterator[Frame]:
        """Frames from `start` on, seeking as `frame` does."""
        begin = min(start, len(self._pts) - 1) if self._timestamps_ok and self._pts else 0
        try:
            frames = self._decode(begin)
            yield from ((index, frame) for index, frame in frames if index >= start)
        except _SeekMissed:  # raised before any frame is yielded
            self._timestamps_ok = False
            yield from ((index, frame) for index, frame in self._decode(0) if index >= start)

    def frame(self, index: int) -> np.ndarray:
        """Frame `index`; see the class docstring for what it costs."""
        if index < 0:
            raise IndexError(f"no frame {index}")
        with closing(self.iter_from(index)) as frames:
            for _, frame in frames:
                return frame
        raise IndexError(f"video {str(self.path)!r} has {len(self._pts)} frames, no frame {index}")

    def _first_size(self) -> tuple[int, int]:
        return self.frame(0).shape[:2]  # __init__ has set it already

    def _open(self):
        av = require_av()
        try:
            return av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as error:
            raise ValueError(f"cannot read video {str(self.path)!r}: {error}") from error

    def _decode(self, start: int) -> Iterator[Frame]:
        """(index, frame) from frame `start` on; a `start` past 0 must have a known timestamp to seek to."""
        av = require_av()
        index, target = start, (self._pts[start] if start else None)
        with self._open() as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                if target is not None:
                    container.seek(target, stream=stream, backward=True)  # to the keyframe at or before it
                for decoded in container.decode(stream):
                    if target is not None:  # after a seek: skip the frames before the target
                        if decoded.pts is None or decoded.pts > target:
                            raise _SeekMissed
                        if decoded.pts < target:
                            continue
                        target = None
                    if index == len(self._pts):
                        self._note_timestamp(decoded.pts)
                    self._check_size(index, decoded.height, decoded.width, f"video {str(self.path)!r}")
                    yield index, decoded.to_ndarray(format="rgb24")
                    index += 1
            except av.error.FFmpegError as error:
                raise ValueError(f"cannot decode video {str(self.path)!r} at frame {index}: {error}") from error

    def _note_timestamp(self, pts: int | None) -> None:
        if pts is None or (self._pts and pts <= self._pts[-1]):
            self._timestamps_ok = False
        self._pts.append(pts if pts is not None else -1)


class _SeekMissed(Exception):
    """A seek did not land on the expected frame: decode from the start instead."""


def require_av():
    """The `av` module (PyAV), imported on first use: it is the optional `[video]` extra."""
    try:
        import av
    except ImportError as error:
        raise ImportError("reading and writing video files needs PyAV: pip install 'conceptseg[video]'") from error
    return av
