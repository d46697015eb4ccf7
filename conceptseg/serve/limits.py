"""What the server accepts and holds; every limit answers with a clear 4xx when it is reached."""

from __future__ import annotations

from dataclasses import dataclass

from conceptseg.io.images import ImageLimits


@dataclass(frozen=True)
class ServeLimits:
    """Limits of one server (all configurable from `conceptseg serve`).

    Uploads: max_upload_bytes per request body, images up to max_image_side a side and max_image_pixels,
    videos up to max_video_frames. Requests: at most max_prompts boxes + points, phrases up to
    max_text_length characters. Held state: max_images encoded images (least recently used dropped first)
    within max_cache_bytes, max_sessions open videos, each closed after session_idle_seconds unused. Work:
    `workers` model threads, at most max_queued requests waiting or running (503 beyond), each answered
    within request_timeout_seconds (504 beyond; the work itself finishes in the background).
    """

    max_upload_bytes: int = 32 * 2**20
    max_image_side: int = 8192
    max_image_pixels: int = 40_000_000
    max_video_frames: int = 600
    max_prompts: int = 64
    max_text_length: int = 200
    max_images: int = 32
    max_cache_bytes: int = 2 * 2**30
    max_sessions: int = 4
    session_idle_seconds: float = 600.0
    workers: int = 1
    max_queued: int = 16
    request_timeout_seconds: float = 300.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"ServeLimits.{name} must be positive, got {value}")

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_pixels=self.max_image_pixels, max_side=self.max_image_side,
                           max_bytes=self.max_upload_bytes)
