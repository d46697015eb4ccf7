"""Where the embedded default model lives inside the package."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def embedded_model_location() -> Path:
    """The package folder that holds (or is to hold) the embedded model: model.safetensors + config.json."""
    return Path(str(resources.files("conceptseg") / "assets" / "embedded"))


def embedded_model_dir() -> Path:
    """The embedded model's folder; a clear error if this copy of the package has no embedded model."""
    directory = embedded_model_location()
    if not (directory / "model.safetensors").exists():
        raise FileNotFoundError(
            "the embedded conceptseg model is not installed in this copy of the package; pass a checkpoint "
            "instead (a sam3.pt path, a Hugging Face directory or the hub id 'facebook/sam3')"
        )
    return directory
