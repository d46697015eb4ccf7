"""The FastAPI application: health and model info, images (upload, concept segmentation, one-object
segmentation) and, from `videos.py`, video sessions. `create_app` builds one around a loaded model."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from conceptseg.io.images import read_image_bytes
from conceptseg.predict.image import ImagePredictor
from conceptseg.serve.limits import ServeLimits
from conceptseg.serve.payloads import InstanceRequest, SegmentRequest, coco_dataset, instances, read_upload
from conceptseg.serve.store import ImageStore, StoredImage, VideoStore, new_id
from conceptseg.serve.videos import add_video_routes
from conceptseg.serve.workers import ModelWorkers

if TYPE_CHECKING:
    from conceptseg.model.sam3 import SAM3

STATIC = Path(__file__).parent / "static"
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and part headers around an upload's bytes


@dataclass
class Server:
    """Everything the routes share."""

    model: SAM3
    model_name: str
    limits: ServeLimits
    workers: ModelWorkers
    images: ImageStore
    videos: VideoStore

    @property
    def has_tracker(self) -> bool:
        return "tracker" not in self.model.missing_components


def create_app(model: SAM3, limits: ServeLimits | None = None, model_name: str = "model") -> FastAPI:
    """The API under /v1 (OpenAPI page at /docs) and the web page at /, around `model`."""
    limits = limits or ServeLimits()
    workers = ModelWorkers(limits.workers, limits.max_queued, limits.request_timeout_seconds)
    videos = VideoStore(limits.max_sessions, limits.session_idle_seconds, close=lambda v: workers.submit(v.close))
    server = Server(model.eval(), model_name, limits, workers, ImageStore(limits.max_images, limits.max_cache_bytes),
                    videos)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        sweeper = asyncio.create_task(_expire_sessions(server))
        yield
        sweeper.cancel()
        workers.shutdown()
        server.videos.close_all()

    app = FastAPI(title="conceptseg", version="1", lifespan=lifespan,
                  description="Promptable concept segmentation (SAM 3): images and videos.")
    app.state.server = server
    _add_body_limit(app, limits)
    _add_error_handlers(app)
    _add_image_routes(app, server)
    add_video_routes(app, server)
    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


async def _expire_sessions(server: Server) -> None:
    period = min(5.0, max(0.05, server.limits.session_idle_seconds / 4))
    while True:
        await asyncio.sleep(period)
        server.videos.expire_idle()


def _add_body_limit(app: FastAPI, limits: ServeLimits) -> None:
    """Refuse a request whose declared body is over the upload limit before reading it (413)."""
    largest = limits.max_upload_bytes + MULTIPART_OVERHEAD

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > largest:
            return JSONResponse({"detail": f"the request body is {int(declared):,} bytes, over the limit of "
                                           f"{limits.max_upload_bytes:,} (max_upload_bytes)"}, status_code=413)
        return await call_next(request)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = error.errors()
        if any(problem.get("type") == "json_invalid" for problem in problems):
            return JSONResponse({"detail": "the request body is not valid JSON"}, status_code=400)
        first = problems[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return JSONResponse({"detail": f"{where or 'request'}: {first.get('msg')}{more}"}, status_code=422)

    @app.exception_handler(ValueError)
    async def refused(_request: Request, error: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=422)


def _add_image_routes(app: FastAPI, server: Server) -> None:
    limits = server.limits

    @app.get("/v1/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "busy": server.workers.pending, "videos": len(server.videos),
                **server.images.stats()}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return {"name": server.model_name, "input_size": server.model.config.vit.image_size,
                "prompts": {"text": True, "boxes": True, "points": True, "instance": server.has_tracker,
                            "video": server.has_tracker},
                "missing_components": list(server.model.missing_components), "limits": asdict(limits)}

    @app.post("/v1/images", status_code=201)
    async def upload_image(file: UploadFile) -> dict[str, Any]:
        """Upload an image (multipart field `file`); it is encoded once and kept for later prompts."""
        data = await read_upload(file, limits)
        name = file.filename or "upload"

        def encode() -> StoredImage:
            predictor = ImagePredictor(server.model)
            predictor.set_image(read_image_bytes(data, limits.image_limits, name))
            return StoredImage(new_id(), name, predictor)

        image = await server.workers.run(encode)
        server.images.add(image)
        height, width = image.size
        return {"image_id": image.image_id, "width": width, "height": height}

    @app.post("/v1/images/{image_id}/segment")
    async def segment(image_id: str, body: SegmentRequest) -> dict[str, Any]:
        """Every instance of a concept: a phrase and/or exemplar boxes and points (labels 1/0)."""
        body.check(limits)
        image = server.images.get(image_id)

        def predict():
            with image.lock:
                return image.predictor.predict(body.text, body.boxes, body.box_labels, body.points,
                                               body.point_labels, threshold=body.threshold)

        results = await server.workers.run(predict)
        if body.format == "coco":
            return coco_dataset(results, image.name, body.text or "exemplar")
        height, width = image.size
        return {"image_id": image_id, "width": width, "height": height, "instances": instances(results)}

    @app.post("/v1/images/{image_id}/instance")
    async def instance(image_id: str, body: InstanceRequest) -> dict[str, Any]:
        """One object from clicks and/or a box (SAM 1 style): candidate masks with predicted IoU as score."""
        body.check(limits)
        if not server.has_tracker:
            raise HTTPException(422, f"the model {server.model_name!r} carries no tracker weights: one-object "
                                     "segmentation needs them (concept prompts with points work: /segment)")
        image = server.images.get(image_id)

        def predict():
            with image.lock:
                return image.predictor.predict_instance(body.points, body.point_labels, body.box,
                                                        multimask=body.multimask)

        results = await server.workers.run(predict)
        server.images.remeasure(image)
        height, width = image.size
        return {"image_id": image_id, "width": width, "height": height, "instances": instances(results)}
