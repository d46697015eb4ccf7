"""What the server holds between requests: encoded images (an LRU bounded by count and bytes) and video
sessions (bounded in number, closed after an idle timeout)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException

from conceptseg.predict.image import ImagePredictor
from conceptseg.predict.video import VideoSession

EXPIRED_IDS_KEPT = 1024  # expired session ids remembered, to answer 410 rather than 404


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class StoredImage:
    """An uploaded image with its own predictor (its encodings cached); `lock`: one model call at a time."""

    image_id: str
    name: str
    predictor: ImagePredictor
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)"""
        return self.predictor.image_size


class ImageStore:
    """Images by id; adding one past `max_images` or `max_bytes` drops the least recently used."""

    def __init__(self, max_images: int, max_bytes: int) -> None:
        self.max_images, self.max_bytes = max_images, max_bytes
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self._bytes: dict[str, int] = {}
        self._lock = threading.Lock()  # worker threads re-measure entries

    def add(self, image: StoredImage) -> None:
        size = image.predictor.cached_bytes
        if size > self.max_bytes:
            raise HTTPException(413, f"the encoded image needs {size:,} bytes, over the cache limit of "
                                     f"{self.max_bytes:,} (max_cache_bytes)")
        with self._lock:
            self._images[image.image_id] = image
            self._bytes[image.image_id] = size
            self._evict(keep=image.image_id)

    def get(self, image_id: str) -> StoredImage:
        with self._lock:
            image = self._images.get(image_id)
            if image is None:
                raise HTTPException(404, f"no image {image_id!r}: upload it with POST /v1/images (images are "
                                         f"dropped, least recently used first, beyond {self.max_images} or "
                                         f"{self.max_bytes:,} bytes)")
            self._images.move_to_end(image_id)
            return image

    def remeasure(self, image: StoredImage) -> None:
        """Count bytes cached since the image was added (e.g. the tracker's features), dropping others if over."""
        with self._lock:
            if image.image_id in self._images:
                self._bytes[image.image_id] = image.predictor.cached_bytes
                self._evict(keep=image.image_id)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"images": len(self._images), "image_cache_bytes": sum(self._bytes.values())}

    def _evict(self, keep: str) -> None:
        while len(self._images) > self.max_images or sum(self._bytes.values()) > self.max_bytes:
            oldest = next(iter(self._images))
            if oldest == keep:
                break
            del self._images[oldest], self._bytes[oldest]


@dataclass
class StoredVideo:
    """An open video session; `lock` serialises model calls on it, `directory` holds its upload and results."""

    video_id: str
    session: VideoSession
    directory: Path
    num_frames: int
    size: tuple[int, int]  # (height, width)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = 0.0
    streaming: bool = False
    results: Path | None = None  # YT-VIS results of the last finished propagation

    def close(self) -> None:
        with self.lock:
            self.session.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class VideoStore:
    """Open sessions by id, at most `max_sessions`; one unused for `idle_seconds` is closed (then 410).

    close: called with each session removed by expiry (the server closes it in its worker pool, in order with
    the model calls that may still hold it)."""

    def __init__(self, max_sessions: int, idle_seconds: float, close: Callable[[StoredVideo], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_sessions, self.idle_seconds, self.close, self.clock = max_sessions, idle_seconds, close, clock
        self._videos: dict[str, StoredVideo] = {}
        self._expired: deque[str] = deque(maxlen=EXPIRED_IDS_KEPT)

    def check_room(self) -> None:
        if len(self._videos) >= self.max_sessions:
            raise HTTPException(429, f"{len(self._videos)} video sessions are open, the limit (max_sessions): "
                                     "close one with DELETE /v1/videos/{id} or wait for one to expire")

    def add(self, video: StoredVideo) -> None:
        self.check_room()
        video.last_used = self.clock()
        self._videos[video.video_id] = video

    def get(self, video_id: str) -> StoredVideo:
        video = self._videos.get(video_id)
        if video is not None and self._idle(video):
            self._expire(video)
            video = None
        if video is None:
            if video_id in self._expired:
                raise HTTPException(410, f"video session {video_id!r} expired after {self.idle_seconds:g} s "
                                         "unused: upload the video again")
            raise HTTPException(404, f"no video session {video_id!r}")
        video.last_used = self.clock()
        return video

    def remove(self, video_id: str) -> StoredVideo:
        video = self.get(video_id)
        del self._videos[video_id]
        return video

    def expire_idle(self) -> int:
        """Close the idle sessions; returns how many."""
        idle = [video for video in self._videos.values() if self._idle(video)]
        for video in idle:
            self._expire(video)
        return len(idle)

    def close_all(self) -> None:
        """Close every session (the server is stopping)."""
        for video in self._videos.values():
            video.close()
        self._videos.clear()

    def __len__(self) -> int:
        return len(self._videos)

    def _idle(self, video: StoredVideo) -> bool:
        return not video.streaming and self.clock() - video.last_used > self.idle_seconds

    def _expire(self, video: StoredVideo) -> None:
        del self._videos[video.video_id]
        self._expired.append(video.video_id)
        self.close(video)
