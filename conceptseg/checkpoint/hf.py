"""The Hugging Face layouts: `Sam3Model` / `Sam3VideoModel` keys and configs -> ours.

Our module tree uses the official leaf names; the Hugging Face layout (split q/k/v, renamed modules) maps by
the ordered rules in `HF_RULES`, the tracker part by `hf_tracker`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch

from conceptseg.checkpoint.hf_tracker import hf_tracker_state_dict_to_official
from conceptseg.model.configs import SAM3Config, TrackerConfig, config_from_dict

StateDict = dict[str, torch.Tensor]

# weights that Hugging Face checkpoints do not carry: the detector's point-prompt projections
HF_ABSENT = re.compile(r"^detector\.geometry_encoder\.points_")
# transformers' `layer_norm_eps` default, which its ViT does read
HF_CONFIG_LAYER_NORM_EPS = 1e-6
DETECTOR_LAYER_NORM_EPS = 1e-5


def _minus_one(match: re.Match) -> str:
    return f"{match.group(1)}layers.{int(match.group(2)) - 1}."


# Hugging Face name -> ours, applied in order. A suffix "#q"/"#k"/"#v" marks one third of a fused projection.
HF_RULES: tuple[tuple[str, str | Callable[[re.Match], str]], ...] = (
    (r"^vision_encoder\.backbone\.embeddings\.patch_embeddings\.projection\.", "backbone.trunk.patch_embed.proj."),
    (r"^vision_encoder\.backbone\.embeddings\.position_embeddings$", "backbone.trunk.pos_embed"),
    (r"^vision_encoder\.backbone\.layer_norm\.", "backbone.trunk.ln_pre."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.layer_norm(\d)\.", r"backbone.trunk.blocks.\1.norm\2."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.([qkv])_proj\.(\w+)$", r"backbone.trunk.blocks.\1.attn.qkv.\3#\2"),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.attention\.o_proj\.", r"backbone.trunk.blocks.\1.attn.proj."),
    (r"^vision_encoder\.backbone\.layers\.(\d+)\.mlp\.", r"backbone.trunk.blocks.\1.mlp."),
    (r"^vision_encoder\.neck\.fpn_layers\.", "backbone.neck.levels."),
    (r"^tracker_neck\.fpn_layers\.", "backbone.tracker_neck.levels."),
    (r"levels\.0\.scale_layers\.0\.", "levels.0.dconv_2x2_0."),
    (r"levels\.1\.scale_layers\.0\.", "levels.1.dconv_2x2."),
    (r"levels\.0\.scale_layers\.2\.", "levels.0.dconv_2x2_1."),
    (r"(levels\.\d)\.proj1\.", r"\1.conv_1x1."),
    (r"(levels\.\d)\.proj2\.", r"\1.conv_3x3."),
    (r"^text_encoder\.text_model\.embeddings\.token_embedding\.", "detector.text_encoder.encoder.token_embedding."),
    (r"^text_encoder\.text_model\.embeddings\.position_embedding\.weight$",
     "detector.text_encoder.encoder.positional_embedding"),
    (r"^text_encoder\.text_model\.final_layer_norm\.", "detector.text_encoder.encoder.ln_final."),
    (r"^text_encoder\.text_model\.encoder\.layers\.", "detector.text_encoder.encoder.transformer.resblocks."),
    (r"(resblocks\.\d+)\.self_attn\.", r"\1.attn."),
    (r"(resblocks\.\d+)\.layer_norm(\d)\.", r"\1.ln_\2."),
    (r"(resblocks\.\d+)\.mlp\.fc1\.", r"\1.mlp.c_fc."),
    (r"(resblocks\.\d+)\.mlp\.fc2\.", r"\1.mlp.c_proj."),
    (r"^text_encoder\.text_projection\.weight$", "detector.text_encoder.encoder.text_projection"),
    (r"^text_projection\.", "detector.text_encoder.resizer."),
    (r"^geometry_encoder\.layers\.", "detector.geometry_encoder.encode."),
    (r"^geometry_encoder\.vision_layer_norm\.", "detector.geometry_encoder.img_pre_norm."),
    (r"^geometry_encoder\.prompt_layer_norm\.", "detector.geometry_encoder.norm."),
    (r"^geometry_encoder\.output_layer_norm\.", "detector.geometry_encoder.encode_norm."),
    (r"^geometry_encoder\.", "detector.geometry_encoder."),
    (r"^detr_encoder\.layers\.", "detector.fusion_encoder.layers."),
    (r"((?:encode|fusion_encoder\.layers)\.\d+)\.cross_attn\.", r"\1.cross_attn_image."),
    (r"((?:encode|fusion_encoder\.layers)\.\d+)\.layer_norm(\d)\.", r"\1.norm\2."),
    (r"^detr_decoder\.", "detector.decoder."),
    (r"(decoder\.layers\.\d+)\.text_cross_attn_layer_norm\.", r"\1.catext_norm."),
    (r"(decoder\.layers\.\d+)\.vision_cross_attn_layer_norm\.", r"\1.norm1."),
    (r"(decoder\.layers\.\d+)\.self_attn_layer_norm\.", r"\1.norm2."),
    (r"(decoder\.layers\.\d+)\.mlp_layer_norm\.", r"\1.norm3."),
    (r"(decoder\.layers\.\d+)\.text_cross_attn\.", r"\1.ca_text."),
    (r"(decoder\.layers\.\d+)\.vision_cross_attn\.", r"\1.cross_attn."),
    (r"(\.(?:encode|layers)\.\d+)\.mlp\.fc(\d)\.", r"\1.linear\2."),
    (r"^detector\.decoder\.output_layer_norm\.", "detector.decoder.norm."),
    (r"^detector\.decoder\.presence_layer_norm\.", "detector.decoder.presence_token_out_norm."),
    (r"^detector\.decoder\.box_head\.", "detector.decoder.bbox_embed."),
    (r"^detector\.decoder\.presence_head\.", "detector.decoder.presence_token_head."),
    (r"^detector\.decoder\.box_rpb_embed_([xy])\.", r"detector.decoder.boxRPB_embed_\1."),
    (r"^dot_product_scoring\.text_mlp_out_norm\.", "detector.scorer.prompt_mlp.out_norm."),
    (r"^dot_product_scoring\.text_mlp\.", "detector.scorer.prompt_mlp."),
    (r"^dot_product_scoring\.text_proj\.", "detector.scorer.prompt_proj."),
    (r"^dot_product_scoring\.query_proj\.", "detector.scorer.hs_proj."),
    (r"^mask_decoder\.mask_embedder\.", "detector.segmentation_head.mask_predictor.mask_embed."),
    (r"^mask_decoder\.instance_projection\.", "detector.segmentation_head.instance_seg_head."),
    (r"^mask_decoder\.semantic_projection\.", "detector.segmentation_head.semantic_seg_head."),
    (r"^mask_decoder\.prompt_cross_attn_norm\.", "detector.segmentation_head.cross_attn_norm."),
    (r"^mask_decoder\.prompt_cross_attn\.", "detector.segmentation_head.cross_attend_prompt."),
    (r"^mask_decoder\.", "detector.segmentation_head."),
    (r"^(detector\.(?:decoder|scorer)\.\w+\.)layer(\d)\.", _minus_one),
    (r"\.([qkv])_proj\.(weight|bias)$", r".in_proj_\2#\1"),
    (r"\.o_proj\.", ".out_proj."),
)


def hf_key_to_ours(key: str) -> str:
    """Rename one key of a Hugging Face `Sam3Model` state dict (without `detector_model.`) to ours."""
    for pattern, replacement in HF_RULES:
        key = re.sub(pattern, replacement, key)
    return key


def hf_to_ours(state: StateDict | Iterable[tuple[str, torch.Tensor]]) -> StateDict:
    """Convert a Hugging Face state dict (Sam3Model, or Sam3VideoModel with `detector_model.` etc.) to ours.

    `state`, a dict or (key, tensor) pairs read as they come, is consumed (a dict is emptied) so that each
    source tensor can be freed once converted: loading the released size then holds about one copy of the
    weights."""
    out: StateDict = {}
    tracker: StateDict = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    pairs = ((key, state.pop(key)) for key in list(state)) if isinstance(state, dict) else state
    for key, value in pairs:
        if key.startswith("tracker_model."):
            tracker[key.removeprefix("tracker_model.")] = value
            continue
        name = hf_key_to_ours(key.removeprefix("detector_model."))
        if "#" in name:
            name, which = name.split("#")
            qkv = parts.setdefault(name, {})
            qkv[which] = value
            if len(qkv) == 3:
                out[name] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
                del parts[name]
        elif name == "backbone.trunk.pos_embed":  # re-insert the unused CLS slot
            out[name] = torch.cat((value.new_zeros(1, 1, value.shape[-1]), value), dim=1)
        elif name == "detector.text_encoder.encoder.text_projection":  # HF stores it as a Linear weight
            out[name] = value.t()
        else:
            out[name] = value
    if parts:
        raise ValueError(f"incomplete q/k/v projections in the checkpoint: {sorted(parts)[:3]}")
    if tracker:
        out.update({f"tracker.{k}": v for k, v in hf_tracker_state_dict_to_official(tracker).items()})
    return out


def tracker_config_from_hf(data: dict) -> dict:
    """Our tracker section from a Hugging Face `Sam3TrackerVideoConfig` dict (absent entries keep defaults)."""
    base = TrackerConfig()
    decoder = data.get("mask_decoder_config", {})
    prompt = data.get("prompt_encoder_config", {})
    return {
        "mask_in_chans": prompt.get("mask_input_channels", base.mask_in_chans),
        "decoder_depth": decoder.get("num_hidden_layers", base.decoder_depth),
        "decoder_heads": decoder.get("num_attention_heads", base.decoder_heads),
        "decoder_mlp_dim": decoder.get("mlp_dim", base.decoder_mlp_dim),
        "attention_downsample": decoder.get("attention_downsample_rate", base.attention_downsample),
        "num_multimask_outputs": decoder.get("num_multimask_outputs", base.num_multimask_outputs),
        "iou_head_hidden_dim": decoder.get("iou_head_hidden_dim", base.iou_head_hidden_dim),
        "iou_head_depth": decoder.get("iou_head_depth", base.iou_head_depth),
        "memory_dim": data.get("memory_encoder_output_channels", base.memory_dim),
        "num_maskmem": data.get("num_maskmem", base.num_maskmem),
        "memory_attention_layers": data.get("memory_attention_num_layers", base.memory_attention_layers),
        "memory_attention_mlp_dim": data.get("memory_attention_feed_forward_hidden_size",
                                             base.memory_attention_mlp_dim),
        "max_obj_ptrs_in_encoder": data.get("max_object_pointers_in_encoder", base.max_obj_ptrs_in_encoder),
        "max_cond_frames_in_attn": data.get("max_cond_frame_num", base.max_cond_frames_in_attn),
    }


def config_from_hf(data: dict) -> SAM3Config:
    """Our config from a Hugging Face `Sam3Config` (or `Sam3VideoConfig`, with its tracker) JSON dict."""
    tracker = tracker_config_from_hf(data.get("tracker_config", {}))
    if "detector_config" in data:
        data = data["detector_config"]
    vision = data.get("vision_config", {})
    vit = vision.get("backbone_config", {})
    text = data.get("text_config", {})
    geometry = data.get("geometry_encoder_config", {})
    fusion = data.get("detr_encoder_config", {})
    decoder = data.get("detr_decoder_config", {})
    base = SAM3Config()
    image_size = vit.get("image_size", base.vit.image_size)
    patch_size = vit.get("patch_size", base.vit.patch_size)
    return config_from_dict({
        "vit": {
            "image_size": image_size,
            "patch_size": patch_size,
            "width": vit.get("hidden_size", base.vit.width),
            "depth": vit.get("num_hidden_layers", base.vit.depth),
            "num_heads": vit.get("num_attention_heads", base.vit.num_heads),
            "mlp_dim": vit.get("intermediate_size", base.vit.mlp_dim),
            "window_size": vit.get("window_size", base.vit.window_size),
            "global_layers": tuple(vit.get("global_attn_indexes", base.vit.global_layers)),
            "pretrain_grid": vit.get("pretrain_image_size", 336) // patch_size,
            "rope_theta": (vit.get("rope_parameters") or {}).get("rope_theta", base.vit.rope_theta),
            "layer_norm_eps": vit.get("layer_norm_eps", HF_CONFIG_LAYER_NORM_EPS),
        },
        "text": {
            "vocab_size": text.get("vocab_size", base.text.vocab_size),
            "width": text.get("hidden_size", base.text.width),
            "depth": text.get("num_hidden_layers", base.text.depth),
            "num_heads": text.get("num_attention_heads", base.text.num_heads),
            "mlp_dim": text.get("intermediate_size", base.text.mlp_dim),
            "context_length": text.get("max_position_embeddings", base.text.context_length),
            "projection_dim": text.get("projection_dim", base.text.projection_dim),
            "layer_norm_eps": text.get("layer_norm_eps", base.text.layer_norm_eps),
        },
        "tracker": tracker,
        "d_model": vision.get("fpn_hidden_size", base.d_model),
        "num_heads": fusion.get("num_attention_heads", base.num_heads),
        "ffn_dim": fusion.get("intermediate_size", base.ffn_dim),
        "geometry_layers": geometry.get("num_layers", base.geometry_layers),
        "fusion_layers": fusion.get("num_layers", base.fusion_layers),
        "decoder_layers": decoder.get("num_layers", base.decoder_layers),
        "num_queries": decoder.get("num_queries", base.num_queries),
        "roi_size": geometry.get("roi_size", base.roi_size),
        # transformers builds every detector LayerNorm (geometry, fusion, decoder, scorer, mask head) with
        # PyTorch's default eps, whatever the config's `layer_norm_eps` says (1e-6 by default); so does the
        # official code. Reading the field would change the outputs.
        "layer_norm_eps": DETECTOR_LAYER_NORM_EPS,
    })
