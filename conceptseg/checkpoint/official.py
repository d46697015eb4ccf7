"""The official layout (`sam3.pt`): a short prefix table maps its keys to ours, and back."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from conceptseg.model.rope import axial_rope_angles
from conceptseg.model.sam3 import SAM3

StateDict = dict[str, torch.Tensor]

# official prefix -> ours; everything below these prefixes keeps its official name
OFFICIAL_PREFIXES = (
    ("detector.backbone.vision_backbone.trunk.", "backbone.trunk."),
    ("detector.backbone.vision_backbone.convs.", "backbone.neck.levels."),
    ("detector.backbone.vision_backbone.sam2_convs.", "backbone.tracker_neck.levels."),
    ("detector.backbone.language_backbone.", "detector.text_encoder."),
    ("detector.geometry_encoder.", "detector.geometry_encoder."),
    ("detector.transformer.encoder.", "detector.fusion_encoder."),
    ("detector.transformer.decoder.", "detector.decoder."),
    ("detector.segmentation_head.", "detector.segmentation_head."),
    ("detector.dot_prod_scoring.", "detector.scorer."),
    ("tracker.", "tracker."),
)
# RoPE tables stored by the official code as complex buffers; we recompute them.
OFFICIAL_IGNORED = re.compile(r"\.attn\.freqs_cis$")


def official_to_ours(state: StateDict) -> StateDict:
    """Convert an official `sam3.pt` state dict (prefixes `detector.` / `tracker.`) to ours."""
    out: StateDict = {}
    for key, value in state.items():
        if OFFICIAL_IGNORED.search(key):
            continue
        for official, ours in OFFICIAL_PREFIXES:
            if key.startswith(official):
                out[ours + key[len(official):]] = value
                break
        else:
            raise ValueError(f"unexpected key {key!r} in the official checkpoint")
    return out


def ours_to_official(model: SAM3) -> StateDict:
    """Our weights in the official `sam3.pt` layout, including its complex RoPE buffers."""
    if model.config.two_stage_queries:
        raise ValueError("two-stage query selection is not part of SAM 3: this model has no official layout")
    if model.config.vit.conv_stem:
        raise ValueError("a convolutional patch stem is not part of SAM 3: this model has no official layout")
    out: StateDict = {}
    for key, value in model.state_dict().items():
        for official, ours in OFFICIAL_PREFIXES:
            if key.startswith(ours):
                out[official + key[len(ours):]] = value
                break
    vit = model.config.vit
    head_dim = vit.width // vit.num_heads
    for i in range(vit.depth):
        side = vit.grid_size if i in vit.global_layers else vit.window_size
        angles = axial_rope_angles(side, side, head_dim, theta=vit.rope_theta, scale=vit.window_size / side)
        out[f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis"] = torch.polar(
            torch.ones_like(angles), angles
        )
    return out


def read_official_state(path: Path) -> StateDict:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types; all mean "not a plain weights file"
        raise ValueError(f"{path} could not be read as a weights-only PyTorch checkpoint: {error}") from error
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (expected a dict of tensors, or {{'model': dict}})")
    return state
