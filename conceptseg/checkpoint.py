"""Load and save SAM 3 weights: the official `sam3.pt`, Hugging Face layouts, a hub id, and our own format.

Our module tree uses the official leaf names, so the official layout maps by a short prefix table; the
Hugging Face layout (split q/k/v, renamed modules) maps by the ordered rules in `HF_RULES`. Loading is strict:
every key of the model must be filled and every key of the file used, except the documented dead ones.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .checkpoint_tracker import hf_tracker_state_dict_to_official
from .model.configs import SAM3Config, TrackerConfig, config_from_dict, config_to_dict
from .model.sam3 import SAM3
from .model.vit import axial_rope_angles

StateDict = dict[str, torch.Tensor]

FORMAT_NAME = "conceptseg"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DEFAULT_HUB_ID = "facebook/sam3"

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
# weights that Hugging Face checkpoints do not carry: the detector's point-prompt projections
HF_ABSENT = re.compile(r"^detector\.geometry_encoder\.points_")
TRACKER_KEYS = re.compile(r"^(tracker\.|backbone\.tracker_neck\.)")


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


def hf_to_ours(state: StateDict) -> StateDict:
    """Convert a Hugging Face state dict (Sam3Model, or Sam3VideoModel with `detector_model.` etc.) to ours."""
    detector = {k.removeprefix("detector_model."): v for k, v in state.items()
                if not k.startswith(("tracker_model.", "tracker_neck."))}
    if any(k.startswith("tracker_neck.") for k in state):
        detector.update({k: v for k, v in state.items() if k.startswith("tracker_neck.")})
    out: StateDict = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in detector.items():
        name = hf_key_to_ours(key)
        if "#" in name:
            name, which = name.split("#")
            parts.setdefault(name, {})[which] = value
        elif name == "backbone.trunk.pos_embed":  # re-insert the unused CLS slot
            out[name] = torch.cat((value.new_zeros(1, 1, value.shape[-1]), value), dim=1)
        elif name == "detector.text_encoder.encoder.text_projection":  # HF stores it as a Linear weight
            out[name] = value.t()
        else:
            out[name] = value
    for name, qkv in parts.items():
        out[name] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    tracker = {k.removeprefix("tracker_model."): v for k, v in state.items() if k.startswith("tracker_model.")}
    if tracker:
        out.update({f"tracker.{k}": v for k, v in hf_tracker_state_dict_to_official(tracker).items()})
    return out


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
        angles = axial_rope_angles(side, head_dim, vit.rope_theta, vit.window_size / side)
        out[f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis"] = torch.polar(
            torch.ones_like(angles), angles
        )
    return out


def load_state_dict_strict(model: SAM3, state: StateDict, allowed_missing: re.Pattern | None = None) -> None:
    """Move `state` into `model` (emptying the dict); an unexpected, missing (unless allowed) or mis-shaped key
    is an error."""
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not (allowed_missing and allowed_missing.search(k)))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {_preview(unexpected)}")
    if missing:
        problems.append(f"missing keys {_preview(missing)}")
    if wrong:
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:3]]
        problems.append(f"shape mismatches ({len(wrong)}): {'; '.join(shapes)}")
    if problems:
        raise ValueError("checkpoint does not fit the model config: " + "; ".join(problems))
    # Fresh copies (freeing each source tensor as we go, so peak memory stays near one copy of the weights):
    # tensors sliced out of a file buffer can sit at odd alignments that change which kernels run, and we
    # want identical outputs whatever format the weights came from.
    owned = {key: state.pop(key).clone(memory_format=torch.contiguous_format) for key in list(state)}
    model.load_state_dict(owned, strict=False, assign=True)
    _materialize(model)


def empty_model(config: SAM3Config) -> SAM3:
    """A model without memory for its weights (meta tensors), to be filled by `load_state_dict_strict`.

    Skipping random initialisation halves peak memory and saves seconds on the released size.
    """
    with torch.device("meta"):
        return SAM3(config)


def _materialize(model: SAM3) -> None:
    """After an assigning load: rebuild derived buffers on the CPU and zero what the file did not carry."""
    for block in model.backbone.trunk.blocks:
        block.reset_rope(model.config.vit, torch.device("cpu"))
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor.is_meta:
                empty = torch.zeros(tensor.shape, dtype=tensor.dtype)
                setattr(module, name, nn.Parameter(empty, tensor.requires_grad) if isinstance(tensor, nn.Parameter)
                        else empty)


def _preview(keys: list[str]) -> str:
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


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
            "layer_norm_eps": vit.get("layer_norm_eps", 1e-6),
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
        "layer_norm_eps": fusion.get("layer_norm_eps", 1e-6),
    })


def save_model(model: SAM3, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write `model.safetensors` + `config.json` (our format) into `directory`; returns the directory.

    dtype: store the weights in this dtype (e.g. torch.float16 to halve the file); `load_model` casts back.
    Weights of `model.missing_components` (parts the model never had real weights for) are not written.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    skip = _missing_pattern(tuple(model.missing_components))
    state = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()
             if not (skip and skip.search(k))}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT_NAME})
    meta = {"format": FORMAT_NAME, "version": 1, "config": config_to_dict(model.config),
            "missing_components": list(model.missing_components)}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return directory


def load_model(
    source: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: SAM3Config | None = None,
) -> SAM3:
    """Build a SAM3 model from weights.

    source: None for the embedded default model; a path to the official `sam3.pt`; a Hugging Face directory
    (`save_pretrained` output or a `facebook/sam3` snapshot) or its `model.safetensors`; a directory written by
    `save_model`; or a hub id such as "facebook/sam3" (downloaded with huggingface_hub).
    config: only for official-layout files, which carry no config (default: the released SAM 3 dims).
    """
    if source is None:
        from .embedded import embedded_model_dir

        source = embedded_model_dir()
    path = Path(source).expanduser()
    if not path.exists():
        if _looks_like_hub_id(str(source)):
            path = _download_from_hub(str(source))
        else:
            raise FileNotFoundError(f"no checkpoint at {source!r} (expected a file, a directory or a hub id)")
    model = _load_path(path, config)
    return model.to(device=device, dtype=dtype).eval()


def _load_path(path: Path, config: SAM3Config | None) -> SAM3:
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.exists():
            raise ValueError(f"{path} has no {CONFIG_FILE}: not a conceptseg or Hugging Face checkpoint directory")
        weights = _find_weights(path)
        return _load_with_config(json.loads(config_path.read_text()), weights, config)
    if path.suffix == ".safetensors":
        config_path = path.parent / CONFIG_FILE
        meta = json.loads(config_path.read_text()) if config_path.exists() else {}
        return _load_with_config(meta, load_file(str(path)), config)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _from_official_state(_official_state(path), config)
    raise ValueError(f"{path}: unsupported checkpoint file (expected .pt, .safetensors or a directory)")


def _find_weights(directory: Path) -> StateDict:
    single = directory / WEIGHTS_FILE
    if single.exists():
        return load_file(str(single))
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: StateDict = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    if (directory / "sam3.pt").exists():
        return _official_state(directory / "sam3.pt")
    raise ValueError(f"{directory} holds no {WEIGHTS_FILE}, sharded safetensors or sam3.pt")


def _load_with_config(meta: dict, state: StateDict, config: SAM3Config | None) -> SAM3:
    if meta.get("format") == FORMAT_NAME:
        model = empty_model(config_from_dict(meta["config"]))
        missing = tuple(meta.get("missing_components", ()))
        load_state_dict_strict(model, state, _missing_pattern(missing))
        model.missing_components = missing
        return model
    if any(k.startswith("detector.backbone.") for k in state):
        return _from_official_state(state, config)
    if meta.get("model_type") not in ("sam3", "sam3_video", None):
        raise ValueError(f"config model_type {meta.get('model_type')!r} is not a SAM 3 model")
    model = empty_model(config_from_hf(meta) if meta else SAM3Config())
    converted = hf_to_ours(state)
    state.clear()
    has_tracker = any(k.startswith("tracker.") for k in converted)
    missing = ("detector_points",) + (() if has_tracker else ("tracker",))
    load_state_dict_strict(model, converted, _missing_pattern(missing))
    model.missing_components = missing
    return model


def _missing_pattern(missing: tuple[str, ...]) -> re.Pattern | None:
    patterns = {"detector_points": HF_ABSENT.pattern, "tracker": TRACKER_KEYS.pattern}
    chosen = [patterns[name] for name in missing]
    return re.compile("|".join(chosen)) if chosen else None


def _official_state(path: Path) -> StateDict:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors come in many types; all mean "not a plain weights file"
        raise ValueError(f"{path} could not be read as a weights-only PyTorch checkpoint: {error}") from error
    state = data.get("model", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict (expected a dict of tensors, or {{'model': dict}})")
    return state


def _from_official_state(state: StateDict, config: SAM3Config | None) -> SAM3:
    if not any(k.startswith("detector.") for k in state):
        raise ValueError("not an official SAM 3 checkpoint: no 'detector.*' keys")
    model = empty_model(config or SAM3Config())
    converted = {k: v.float() for k, v in official_to_ours(state).items()}
    state.clear()
    has_tracker = any(k.startswith("tracker.") for k in converted)
    missing = () if has_tracker else ("tracker",)
    load_state_dict_strict(model, converted, _missing_pattern(missing))
    model.missing_components = missing
    return model


def _looks_like_hub_id(source: str) -> bool:
    return re.fullmatch(r"[\w.-]+/[\w.-]+", source) is not None


def _download_from_hub(repo_id: str) -> Path:
    """Fetch config.json + model.safetensors of a hub repo; every failure becomes one actionable error."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise ValueError(
            f"loading {repo_id!r} from the Hugging Face hub needs huggingface_hub: pip install 'conceptseg[hub]'"
        ) from error
    try:
        config = hf_hub_download(repo_id, CONFIG_FILE)
        hf_hub_download(repo_id, WEIGHTS_FILE)
    except Exception as error:  # offline, gated, missing repo or file: all reported the same way
        raise ValueError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(error).__name__}: {error}). "
            "If the repo is gated (facebook/sam3 is), accept its licence on the website and run `hf auth login`; "
            "offline, download the files elsewhere and pass the local directory or sam3.pt path instead."
        ) from error
    return Path(config).parent
