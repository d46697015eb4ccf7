"""Export a model as two ONNX graphs: the image encoder, and the text prompt -> detections part.

    image_encoder.onnx   pixel_values [B, 3, S, S]               -> level0, level1, level2 (the detector neck)
    detector.onnx        level0..2 of one image, input_ids [P, L] -> pred_logits [P, Q], presence_logits [P, 1],
                                                                   pred_boxes [P, Q, 4], pred_masks [P, Q, 4G, 4G]
    conceptseg-onnx.json what the runner needs besides the graphs (image size, mask threshold, provenance)

The split is the predictor's: an image is encoded once, then prompted with any number of phrases (P is a dynamic
axis, as is B). Exemplar prompts and the tracker stay in PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from conceptseg.model.detector import ImageEncoding, TextEncoding
from conceptseg.model.position_encoding import sine_position_encoding
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tokenizer import tokenize

IMAGE_ENCODER = "image_encoder.onnx"
DETECTOR = "detector.onnx"
MANIFEST = "conceptseg-onnx.json"
DETECTOR_OUTPUTS = ("pred_logits", "presence_logits", "pred_boxes", "pred_masks")
# Opset 23's Attention op would keep attention fused, but ONNX Runtime's CPU kernel does not broadcast a padding
# mask over the query axis; at 18 attention is written out (MatMul, Softmax), which every runtime runs.
OPSET = 18
FORMAT_VERSION = 1


class ImageEncoderGraph(nn.Module):
    """pixel_values -> the detector neck's three maps, finest first."""

    def __init__(self, model: SAM3) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = self.model.backbone.neck(self.model.backbone.trunk(pixel_values))
        return levels[0], levels[1], levels[2]


class DetectorGraph(nn.Module):
    """One image's neck maps and P phrases' token ids -> P sets of detections (what `SAM3.detect` returns for a
    text-only prompt)."""

    def __init__(self, model: SAM3) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, level0: torch.Tensor, level1: torch.Tensor, level2: torch.Tensor, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        height, width = level2.shape[-2:]
        pos = sine_position_encoding(height, width, level2.shape[1], level2.device, level2.dtype)
        # the detector reads the neck maps and their position only; the trunk slot carries the coarsest map
        image = ImageEncoding(level2, [level0, level1, level2], pos)
        # token ids go straight to the text encoder: `SAM3.encode_text`'s value checks cannot be traced
        text = TextEncoding(*self.model.detector.text_encoder(input_ids))
        outputs = self.model.detect(image, text)
        return tuple(outputs[name] for name in DETECTOR_OUTPUTS)



def export_onnx(model: SAM3, out: str | Path, checkpoint: tuple[str, str] | None = None) -> dict[str, Path]:
    """Write `image_encoder.onnx`, `detector.onnx` (each with its weights in a `.onnx.data` file beside it) and
    their manifest into the folder `out`; returns the paths of the graphs and the manifest.

    model: a float32 model (not int8-quantized); checkpoint: its (name, version), recorded in the manifest (see
    `conceptseg.checkpoint.checkpoint_identity`). Needs the `onnx` extra (onnx, onnxscript).
    """
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32 or any(".quantized." in type(m).__module__ for m in model.modules()):
        raise ValueError("ONNX export takes a float32 model; load it without quantize= and in float32")
    try:
        import onnxscript  # noqa: F401  (the exporter's own dependency; a clear message instead of its traceback)
    except ImportError as error:
        raise ImportError("ONNX export needs the onnx extra: pip install 'conceptseg[onnx]'") from error
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    size = model.config.vit.image_size
    # example batches of 2 (images) and 3 (phrases), so that neither dimension is mistaken for a constant 1
    pixel_values = torch.zeros(2, 3, size, size)
    input_ids = tokenize(["object"] * 3, model.config.text.context_length)
    with torch.no_grad():
        levels = [level[:1] for level in ImageEncoderGraph(model)(pixel_values)]
    paths = {"image_encoder": out / IMAGE_ENCODER, "detector": out / DETECTOR, "manifest": out / MANIFEST}
    level_names = ["level0", "level1", "level2"]
    # Traced with the math attention kernel: the CPU's fused kernel returns its output in another memory layout
    # than the decomposed graph's, and the exporter would record a view that is invalid in the latter.
    with sdpa_kernel(SDPBackend.MATH), _quiet("onnxscript"):
        torch.onnx.export(
            ImageEncoderGraph(model).eval(), (pixel_values,), paths["image_encoder"], dynamo=True,
            input_names=["pixel_values"], output_names=level_names,
            dynamic_shapes=({0: torch.export.Dim("images")},), opset_version=OPSET, verbose=False,
        )
        torch.onnx.export(
            DetectorGraph(model).eval(), (*levels, input_ids), paths["detector"], dynamo=True,
            input_names=[*level_names, "input_ids"], output_names=list(DETECTOR_OUTPUTS),
            dynamic_shapes=(None, None, None, {0: torch.export.Dim("phrases")}), opset_version=OPSET,
            verbose=False,
        )
    manifest = {
        "format": "conceptseg-onnx", "version": FORMAT_VERSION, "opset": OPSET, "image_size": size,
        "context_length": model.config.text.context_length, "mask_threshold": model.mask_threshold,
        "num_queries": model.config.num_queries, "grid_size": levels[2].shape[-1],
        "checkpoint": None if checkpoint is None else {"name": checkpoint[0], "version": checkpoint[1]},
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Hold a library's logger to errors for a while (the graph optimiser logs every fold it skips)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
