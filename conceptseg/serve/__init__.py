"""`conceptseg serve`: an HTTP API (FastAPI, under /v1) and a static web page for concept segmentation.

    from conceptseg.serve import create_app, ServeLimits
    app = create_app(load_model(), ServeLimits(max_sessions=2))   # then: uvicorn.run(app)

Needs the `serve` extra (`pip install 'conceptseg[serve]'`); importing this package does not, so that the
command line can list `serve` without it. The package talks to the model only through `conceptseg.predict`;
model work runs in a bounded worker pool, off the event loop.
"""

from typing import Any

__all__ = ["ServeLimits", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from conceptseg.serve.app import create_app

        return create_app
    if name == "ServeLimits":
        from conceptseg.serve.limits import ServeLimits

        return ServeLimits
    raise AttributeError(f"module 'conceptseg.serve' has no attribute {name!r}")
