"""Video sessions over HTTP: upload a video (or its frames), add prompts, stream the propagation as JSON lines,
read a frame, download the YT-VIS results, close the session."""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import PIL.Image
from fastapi import FastAPI, HTTPException, Response, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from conceptseg.io.images import read_image_bytes
from conceptseg.io.ytvis import YtvisWriter
from conceptseg.predict.video import VideoPredictor
from conceptseg.predict.video_state import FrameResults
from conceptseg.serve.payloads import VideoPromptRequest, frame_objects, read_upload
from conceptseg.serve.store import StoredVideo, new_id

if TYPE_CHECKING:
    from conceptseg.serve.app import Server

RESULTS_FILE = "results.ytvis.json"


def add_video_routes(app: FastAPI, server: Server) -> None:
    _add_session_routes(app, server)
    _add_propagation_routes(app, server)


def _add_session_routes(app: FastAPI, server: Server) -> None:
    limits = server.limits

    @app.post("/v1/videos", status_code=201)
    async def upload_video(file: UploadFile | None = None,
                           frames: list[UploadFile] | None = None) -> dict[str, Any]:
        """Open a session on a video file (field `file`, needs the `video` extra) or on its frames as images
        (field `frames`, repeated, in order)."""
        if not server.has_tracker:
            raise HTTPException(422, f"the model {server.model_name!r} carries no tracker weights: video "
                                     "tracking needs them")
        if (file is None) == (not frames):
            raise HTTPException(422, "give a video file (field 'file') or its frames (field 'frames', one "
                                     "image each, in order), not both")
        if frames and len(frames) > limits.max_video_frames:
            raise HTTPException(413, f"{len(frames)} frames, over the limit of {limits.max_video_frames} "
                                     "(max_video_frames)")
        server.videos.check_room()
        uploads = [file] if file is not None else frames
        data = [(upload.filename or f"frame {n}", await read_upload(upload, limits))
                for n, upload in enumerate(uploads)]
        directory = Path(tempfile.mkdtemp(prefix="conceptseg-video-"))
        try:
            video = await server.workers.run(_open_session, server, directory, data, file is not None)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        try:
            server.videos.add(video)
        except HTTPException:
            server.workers.submit(video.close)
            raise
        height, width = video.size
        return {"video_id": video.video_id, "num_frames": video.num_frames, "width": width, "height": height}

    @app.post("/v1/videos/{video_id}/prompts")
    async def add_prompt(video_id: str, body: VideoPromptRequest) -> dict[str, Any]:
        """A concept (text and/or exemplar boxes, no obj_id) or clicks/a box on one object (obj_id)."""
        body.check(limits)
        video = _idle_video(server, video_id)

        def add() -> tuple[FrameResults | None, list[int]]:
            with video.lock:
                result = video.session.add_prompt(body.frame_index, body.text, body.boxes, body.box_labels,
                                                  body.points, body.point_labels, body.obj_id)
                return result, video.session.object_ids

        result, object_ids = await server.workers.run(add)
        return {"frame": None if result is None else frame_objects(result), "object_ids": object_ids}

    @app.delete("/v1/videos/{video_id}", status_code=204)
    async def close_video(video_id: str) -> Response:
        video = server.videos.remove(video_id)
        server.workers.submit(video.close)
        return Response(status_code=204)


def _add_propagation_routes(app: FastAPI, server: Server) -> None:
    @app.get("/v1/videos/{video_id}/propagate")
    async def propagate(video_id: str, direction: Literal["forward", "backward", "both"] = "forward",
                        start: int | None = None, max_frames: int | None = None) -> StreamingResponse:
        """Track every prompt through the video: one JSON line per frame ({frame_index, objects}), then
        {"done": true, "frames": n}. The results are also kept for GET /v1/videos/{id}/results."""
        video = _idle_video(server, video_id)
        video.streaming = True
        try:
            run = _Propagation(video, video.session.propagate(direction, start, max_frames))
            first = await server.workers.run(run.step)
        except BaseException:
            video.streaming = False
            raise
        return StreamingResponse(_stream(server, video, run, first), media_type="application/x-ndjson")

    @app.get("/v1/videos/{video_id}/frames/{frame_index}")
    async def frame_image(video_id: str, frame_index: int) -> Response:
        """Frame `frame_index` as a JPEG (for a page's frame scrubber)."""
        video = server.videos.get(video_id)
        if not 0 <= frame_index < video.num_frames:
            raise HTTPException(404, f"frame {frame_index} is outside the video (0 to {video.num_frames - 1})")

        def encode() -> bytes:
            with video.lock:
                pixels = video.session.frames.frame(frame_index)
            buffer = io.BytesIO()
            PIL.Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
            return buffer.getvalue()

        return Response(await server.workers.run(encode), media_type="image/jpeg")

    @app.get("/v1/videos/{video_id}/results")
    async def results(video_id: str) -> FileResponse:
        """The YT-VIS results of the last finished propagation."""
        video = server.videos.get(video_id)
        if video.results is None:
            raise HTTPException(404, "no finished propagation yet: GET /v1/videos/{id}/propagate first")
        return FileResponse(video.results, media_type="application/json", filename=f"{video_id}.ytvis.json")


def _open_session(server: Server, directory: Path, data: list[tuple[str, bytes]], is_file: bool) -> StoredVideo:
    """Runs in a worker: decode the upload and open a session on it."""
    limits = server.limits
    if is_file:
        name, content = data[0]
        source: Any = directory / (re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name) or "video")
        source.write_bytes(content)
    else:
        source = [read_image_bytes(content, limits.image_limits, name) for name, content in data]
        sizes = sorted({f"{frame.shape[1]}x{frame.shape[0]}" for frame in source})
        if len(sizes) > 1:
            raise ValueError(f"every frame of a video must have the same size, got {', '.join(sizes)}")
    try:
        session = VideoPredictor(server.model).start(source, limits.image_limits)
    except ImportError as error:
        raise HTTPException(501, str(error)) from error
    num_frames = session.frames.num_frames
    if num_frames is None or num_frames > limits.max_video_frames:
        session.close()
        raise HTTPException(413, f"the video has {num_frames or 'an unknown number of'} frames; the limit is "
                                 f"{limits.max_video_frames} (max_video_frames)")
    return StoredVideo(new_id(), session, directory, num_frames, session.frames.size)


def _idle_video(server: Server, video_id: str) -> StoredVideo:
    video = server.videos.get(video_id)
    if video.streaming:
        raise HTTPException(409, f"video session {video_id!r} is propagating; wait for its stream to end")
    return video


class _Propagation:
    """One propagation's generator and its YT-VIS writer; `step` runs in a worker."""

    def __init__(self, video: StoredVideo, frames) -> None:
        self.video, self.frames = video, frames
        self.writer = YtvisWriter(video.directory / RESULTS_FILE, video_id=1, num_frames=video.num_frames)
        self.categories: dict[str, int] = {}  # prompt label -> YT-VIS category id

    def step(self) -> FrameResults | None:
        with self.video.lock:
            frame = next(self.frames, None)
            if frame is not None:
                ids = [self.categories.setdefault(label, len(self.categories) + 1) for label in frame.labels]
                self.writer.add_frame(frame.frame_index, frame.object_ids.tolist(), ids, frame.masks,
                                      frame.scores)
            return frame

    def finish(self) -> Path:
        with self.video.lock:
            return self.writer.close()

    def abort(self) -> None:
        with self.video.lock:
            self.frames.close()
            self.writer.abort()


async def _stream(server: Server, video: StoredVideo, run: _Propagation, frame: FrameResults | None
                  ) -> AsyncIterator[str]:
    count, finished = 0, False
    try:
        while frame is not None:
            yield json.dumps(frame_objects(frame)) + "\n"
            count += 1
            video.last_used = server.videos.clock()
            frame = await server.workers.run(run.step)
        video.results = await server.workers.run(run.finish)
        finished = True
        yield json.dumps({"done": True, "frames": count}) + "\n"
    except HTTPException as error:  # busy or timed out mid-stream: say so on the stream, then stop
        yield json.dumps({"error": error.detail, "status": error.status_code}) + "\n"
    except Exception as error:  # e.g. the session was deleted meanwhile: the stream ends with the reason
        yield json.dumps({"error": str(error) or type(error).__name__, "status": 500}) + "\n"
    finally:
        video.streaming = False
        video.last_used = server.videos.clock()
        if not finished:  # the client left, or an error: the generator and the spool are released in order
            server.workers.submit(run.abort)
