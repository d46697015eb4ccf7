"""Where the embedded default model lives inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EMBEDDED_DIR = "assets/embedded"


def embedded_model_dir() -> Path:
    """Directory of the embedded model (model.safetensors + config.json); a clear error if it is absent."""
    directory = Path(str(resources.files("conceptseg") / EMBEDDED_DIR))
    if not (directory / "model.safetensors").exists():
        raise FileNotFoundError(
            "the embedded conceptseg model is not installed in this copy of the package; pass a checkpoint "
            "instead (a sam3.pt path, a Hugging Face directory or the hub id 'facebook/sam3')"
        )
    return directory
