"""Load and save SAM 3 weights: the official `sam3.pt`, Hugging Face layouts, a hub id, and our own format.

Loading is strict: every key of the model must be filled and every key of the file used, except the documented
dead ones (the official RoPE tables, which we recompute) and the parts a format does not carry (recorded in
`SAM3.missing_components`). Loading is safe: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conceptseg.checkpoint.embedded import embedded_model_dir
from conceptseg.checkpoint.hf import HF_ABSENT, config_from_hf, hf_to_ours
from conceptseg.checkpoint.official import official_to_ours, read_official_state
from conceptseg.model.configs import SAM3Config, config_from_dict, config_to_dict
from conceptseg.model.sam3 import SAM3

StateDict = dict[str, torch.Tensor]

FORMAT_NAME = "conceptseg"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRACKER_KEYS = re.compile(r"^(tracker\.|backbone\.tracker_neck\.)")


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
            "missing_components": list(model.missing_components), "mask_threshold": model.mask_threshold}
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
        return _from_official_state(read_official_state(path), config)
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
        return read_official_state(directory / "sam3.pt")
    raise ValueError(f"{directory} holds no {WEIGHTS_FILE}, sharded safetensors or sam3.pt")


def _load_with_config(meta: dict, state: StateDict, config: SAM3Config | None) -> SAM3:
    if meta.get("format") == FORMAT_NAME:
        architecture = dict(meta["config"])
        # files written before the mask threshold left the architecture config keep it there
        mask_threshold = meta.get("mask_threshold", architecture.pop("mask_threshold", 0.5))
        model = empty_model(config_from_dict(architecture))
        missing = tuple(meta.get("missing_components", ()))
        load_state_dict_strict(model, state, _missing_pattern(missing))
        model.missing_components = missing
        model.mask_threshold = mask_threshold
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
