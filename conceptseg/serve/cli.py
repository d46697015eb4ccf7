"""`conceptseg serve`: the HTTP API and web page on the embedded model (or --model M).

    conceptseg serve                                  # http://127.0.0.1:8000 (page), /docs (API)
    conceptseg serve --model runs/embedded/model --port 9000 --max-sessions 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from conceptseg.checkpoint import load_model
from conceptseg.cli import UsageError, add_quantize_argument
from conceptseg.serve.limits import ServeLimits

LIMIT_HELP = {
    "max_upload_bytes": "largest request body (an image, a video or its frames) in bytes",
    "max_image_side": "longest accepted image side in pixels",
    "max_image_pixels": "most pixels of an accepted image",
    "max_video_frames": "most frames of an accepted video",
    "max_prompts": "most boxes + points in one request",
    "max_text_length": "longest phrase in characters",
    "max_images": "encoded images kept (least recently used dropped first)",
    "max_cache_bytes": "bytes of encoded images kept",
    "max_sessions": "open video sessions",
    "session_idle_seconds": "a video session unused this long is closed",
    "workers": "threads running the model",
    "max_queued": "requests queued or running before the server answers 503",
    "request_timeout_seconds": "a model call answers 504 after this long",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="HTTP API and web page (needs the serve extra)",
                                   description=__doc__.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--model", default=None, help="weights for conceptseg.load_model (default: embedded)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: cpu)")
    add_quantize_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    for field in dataclasses.fields(ServeLimits):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default,
                            help=f"{LIMIT_HELP[field.name]} (default: {field.default})")
    parser.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from conceptseg.serve.app import create_app
    except ImportError as error:
        raise UsageError(f"{error.name} is missing: pip install 'conceptseg[serve]'") from error
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    limits = ServeLimits(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ServeLimits)})
    model = load_model(args.model, device=args.device, quantize=args.quantize)
    app = create_app(model, limits, model_name=args.model or "embedded")
    print(f"conceptseg serve: http://{args.host}:{args.port} (page), http://{args.host}:{args.port}/docs (API)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
