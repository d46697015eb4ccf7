"""Hugging Face tracker weights -> official names.

Accepted: `Sam3TrackerModel` / `Sam3TrackerVideoModel` state dicts and the `tracker_model.*` part of
`facebook/sam3`.

The official names are those of `conceptseg.model.tracker.Tracker` (the `tracker.*` keys of `sam3.pt`
without the `tracker.` prefix). The rules invert the SAM 2 renames of Hugging Face's conversion script.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

StateDict = dict[str, torch.Tensor]

# Parts of a Hugging Face tracker/video checkpoint that are not tracker weights (or duplicate one).
NOT_TRACKER = ("vision_encoder.", "detector_model.", "tracker_neck.", "shared_image_embedding.")

TOP_LEVEL = (
    ("prompt_encoder.", "sam_prompt_encoder."),
    ("mask_decoder.", "sam_mask_decoder."),
    ("memory_encoder.", "maskmem_backbone."),
    ("memory_attention.", "transformer.encoder."),
    ("object_pointer_proj.", "obj_ptr_proj."),
    ("temporal_positional_encoding_projection_layer.", "obj_ptr_tpos_proj."),
    ("mask_downsample.", "mask_downsample."),
    ("memory_temporal_positional_encoding", "maskmem_tpos_enc"),
    ("no_memory_embedding", "no_mem_embed"),
    ("no_memory_positional_encoding", "no_mem_pos_enc"),
    ("no_object_pointer", "no_obj_ptr"),
    ("occlusion_spatial_embedding_parameter", "no_obj_embed_spatial"),
)

# Renames inside the modules, applied in order to the full Hugging Face key.
INNER_RULES = (
    (r"shared_embedding\.positional_embedding$", "pe_layer.positional_encoding_gaussian_matrix"),
    (r"mask_embed\.conv1\.", "mask_downscaling.0."),
    (r"mask_embed\.layer_norm1\.", "mask_downscaling.1."),
    (r"mask_embed\.conv2\.", "mask_downscaling.3."),
    (r"mask_embed\.layer_norm2\.", "mask_downscaling.4."),
    (r"mask_embed\.conv3\.", "mask_downscaling.6."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.mlp\.proj_in\.", ".mlp.lin1."),  # two-way transformer FFN (checked before the generic FFN rule)
    (r"\.mlp\.proj_out\.", ".mlp.lin2."),
    (r"\.layer_norm(\d)\.", r".norm\1."),
    (r"\.layer_norm_final_attn\.", ".norm_final_attn."),
    (r"^memory_attention\.layer_norm\.", "memory_attention.norm."),
    (r"upscale_conv1\.", "output_upscaling.0."),
    (r"upscale_layer_norm\.", "output_upscaling.1."),
    (r"upscale_conv2\.", "output_upscaling.3."),
    (r"memory_fuser\.", "fuser."),
    (r"(fuser\.layers\.\d+)\.depthwise_conv\.", r"\1.dwconv."),
    (r"(fuser\.layers\.\d+)\.pointwise_conv(\d)\.", r"\1.pwconv\2."),
    (r"(fuser\.layers\.\d+)\.layer_norm\.", r"\1.norm."),
    (r"(fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"feature_projection\.", "pix_feat_proj."),
    (r"memory_encoder\.projection\.", "memory_encoder.out_proj."),
)

FEED_FORWARD = re.compile(r"^(.*)\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")
DOWNSAMPLER = re.compile(
    r"^(.*mask_downsampler)\.(?:layers\.(\d+)\.(conv|layer_norm)|(final_conv))\.(weight|bias)$"
)


def _feed_forward_depths(keys: list[str]) -> dict[str, int]:
    """Number of linear layers (proj_in + hidden layers + proj_out) of every HF feed-forward module."""
    matches = [m for m in map(FEED_FORWARD.match, keys) if m and m.group(4) == "weight"]
    hidden = Counter(m.group(1) for m in matches if m.group(3) is not None)
    return {m.group(1): 2 + hidden[m.group(1)] for m in matches if m.group(2) == "proj_in"}


def _rename_feed_forward(key: str, depths: dict[str, int]) -> str:
    """proj_in -> layers.0, layers.k -> layers.k+1, proj_out -> layers.(n-1) (official `MLP`)."""
    match = FEED_FORWARD.match(key)
    if not match or match.group(1) not in depths:
        return key
    prefix, part, hidden, suffix = match.groups()
    index = 0 if part == "proj_in" else depths[prefix] - 1 if part == "proj_out" else int(hidden) + 1
    return f"{prefix}.layers.{index}.{suffix}"


def _rename_downsampler(key: str, num_stages: int) -> str:
    """layers.k.conv -> encoder.3k, layers.k.layer_norm -> encoder.3k+1, final_conv -> encoder.3n
    (the official Sequential has a GELU at every third index)."""
    match = DOWNSAMPLER.match(key)
    if not match:
        return key
    prefix, stage, part, final, suffix = match.groups()
    index = 3 * num_stages if final else 3 * int(stage) + (part == "layer_norm")
    return f"{prefix}.encoder.{index}.{suffix}"


def hf_tracker_state_dict_to_official(sd: StateDict) -> StateDict:
    """Rename a Hugging Face tracker state dict to the keys of `Tracker.state_dict()`.

    An optional `tracker_model.` prefix is removed. Vision-encoder, detector and tracker-neck weights are left
    out; any other key that is not a tracker weight raises ValueError.
    """
    state = {k.removeprefix("tracker_model."): v for k, v in sd.items()}
    state = {k: v for k, v in state.items() if not k.startswith(NOT_TRACKER)}
    unknown = sorted(k for k in state if not k.startswith(tuple(hf for hf, _ in TOP_LEVEL)))
    if unknown:
        more = " ..." if len(unknown) > 5 else ""
        raise ValueError(f"not Hugging Face tracker weights: {unknown[:5]}{more}")
    depths = _feed_forward_depths([k for k in state if not re.search(r"\.mlp\.proj_(in|out)\.", k)])
    num_stages = len({m.group(2) for k in state if (m := DOWNSAMPLER.match(k)) and m.group(2) is not None})

    out: StateDict = {}
    for key, value in state.items():
        if key == "prompt_encoder.point_embed.weight":  # one [4, C] table -> four [1, C] embeddings
            for i in range(len(value)):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1]
            continue
        key = _rename_downsampler(_rename_feed_forward(key, depths), num_stages)
        for pattern, replacement in INNER_RULES:
            key = re.sub(pattern, replacement, key)
        hf_prefix, official_prefix = next((hf, ours) for hf, ours in TOP_LEVEL if key.startswith(hf))
        out[official_prefix + key.removeprefix(hf_prefix)] = value
    return out
