"""Load and save SAM 3 weights: the official `sam3.pt`, Hugging Face layouts, a hub id, and our own format.

Loading is strict: every key of the model must be filled and every key of the file used, except the documented
dead ones (the official RoPE tables, which we recompute) and the parts a format does not carry (recorded in
`SAM3.missing_components`). Loading is safe: safetensors, or `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from conceptseg.checkpoint.embedded import embedded_model_dir
from conceptseg.checkpoint.hf import HF_ABSENT, config_from_hf, hf_to_ours
from conceptseg.checkpoint.official import official_to_ours, read_official_state
from conceptseg.model.configs import SAM3Config, config_from_dict, config_to_dict
from conceptseg.model.quantize import QUANTIZATIONS, quantize_int8
from conceptseg.model.sam3 import SAM3

StateDict = dict[str, torch.Tensor]
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}

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
    # Tensors sliced out of a file buffer can sit at odd alignments that change which kernels run, and we want
    # identical outputs whatever format the weights came from: those get fresh copies (each source freed as we
    # go). Tensors that already own aligned, contiguous memory are kept, so loading peaks at one copy.
    owned = {key: _owned(state.pop(key)) for key in list(state)}
    model.load_state_dict(owned, strict=False, assign=True)
    _materialize(model)


def safetensors_header(path: str | Path) -> tuple[int, dict[str, dict]]:
    """(where the data starts, {tensor name: dtype, shape, data_offsets}) of a safetensors file."""
    with open(path, "rb") as handle:
        (header_size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_size))
    header.pop("__metadata__", None)
    return 8 + header_size, header


def iter_safetensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every tensor of a safetensors file in file order, each read into its own buffer with
    plain file reads when it is reached.

    Unlike a memory map or one read of the whole file, nothing but the tensors themselves stays in memory, and
    a consumer that converts as it reads (`hf_to_ours`) frees what it replaces before the next tensor is read:
    loading then peaks near one copy of the weights.
    """
    start, header = safetensors_header(path)
    with open(path, "rb") as handle:
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if entry["dtype"] not in SAFETENSORS_DTYPES:
                raise ValueError(f"{path}: tensor {name} has unsupported dtype {entry['dtype']}")
            begin, end = entry["data_offsets"]
            raw = torch.empty(end - begin, dtype=torch.uint8)
            handle.seek(start + begin)
            if handle.readinto(raw.numpy()) != end - begin:
                raise ValueError(f"{path} is truncated (tensor {name})")
            yield name, raw.view(SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])


def read_safetensors(path: str | Path) -> StateDict:
    """Every tensor of a safetensors file (see `iter_safetensors`)."""
    return dict(iter_safetensors(path))


class WeightFiles:
    """The tensors of a checkpoint: safetensors files read lazily, or a state dict already in memory."""

    def __init__(self, files: list[Path] | None = None, state: StateDict | None = None) -> None:
        self.files = files or []
        self.state = state

    def keys(self) -> list[str]:
        if self.state is not None:
            return list(self.state)
        return [name for path in self.files for name in safetensors_header(path)[1]]

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every (name, tensor), each handed over once (an in-memory state dict is emptied as it goes)."""
        if self.state is not None:
            for key in list(self.state):
                yield key, self.state.pop(key)
        for path in self.files:
            yield from iter_safetensors(path)

    def as_dict(self) -> StateDict:
        return dict(self.items())


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` if it is contiguous and alone in its 64-byte aligned buffer, else a copy that is."""
    alone = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    if tensor.is_contiguous() and alone and tensor.storage_offset() == 0 and tensor.data_ptr() % 64 == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


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
    quantize: str | None = None,
) -> SAM3:
    """Build a SAM3 model from weights.

    source: None for the embedded default model; a path to the official `sam3.pt`; a Hugging Face directory
    (`save_pretrained` output or a `facebook/sam3` snapshot) or its `model.safetensors`; a directory written by
    `save_model`; or a hub id such as "facebook/sam3" (downloaded with huggingface_hub).
    config: only for official-layout files, which carry no config (default: the released SAM 3 dims).
    quantize: "int8" for int8 inference on CPU (dynamic quantization of the large Linear layers; which ones and
    why: `conceptseg.model.quantize`); None keeps the weights as they are.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}")
    model = _load_path(resolve_checkpoint(source), config).to(device=device, dtype=dtype).eval()
    return quantize_int8(model) if quantize == "int8" else model


def resolve_checkpoint(source: str | Path | None = None) -> Path:
    """The local file or directory `load_model(source)` reads (a hub id is downloaded first)."""
    if source is None:
        return embedded_model_dir()
    path = Path(source).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(str(source)):
        return _download_from_hub(str(source))
    raise FileNotFoundError(f"no checkpoint at {source!r} (expected a file, a directory or a hub id)")


def checkpoint_identity(source: str | Path | None = None) -> tuple[str, str]:
    """(name, version) of a checkpoint, for the provenance of what it produces: the name as given ("embedded"
    for the default model) and the first 16 hex digits of the SHA-256 of its files (a directory's weight and
    config files, in name order), so that retrained weights under the same name read as another version."""
    path = resolve_checkpoint(source)
    files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".json", ".pt")) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return ("embedded" if source is None else str(source)), digest.hexdigest()[:16]


def _load_path(path: Path, config: SAM3Config | None) -> SAM3:
    if path.is_dir():
        config_path = path / CONFIG_FILE
        if not config_path.exists():
            raise ValueError(f"{path} has no {CONFIG_FILE}: not a conceptseg or Hugging Face checkpoint directory")
        return _load_with_config(json.loads(config_path.read_text()), _find_weights(path), config)
    if path.suffix == ".safetensors":
        config_path = path.parent / CONFIG_FILE
        meta = json.loads(config_path.read_text()) if config_path.exists() else {}
        return _load_with_config(meta, WeightFiles([path]), config)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return _from_official_state(read_official_state(path), config)
    raise ValueError(f"{path}: unsupported checkpoint file (expected .pt, .safetensors or a directory)")


def _find_weights(directory: Path) -> WeightFiles:
    single = directory / WEIGHTS_FILE
    if single.exists():
        return WeightFiles([single])
    index = directory / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return WeightFiles([directory / shard for shard in shards])
    if (directory / "sam3.pt").exists():
        return WeightFiles(state=read_official_state(directory / "sam3.pt"))
    raise ValueError(f"{directory} holds no {WEIGHTS_FILE}, sharded safetensors or sam3.pt")


def _load_with_config(meta: dict, weights: WeightFiles, config: SAM3Config | None) -> SAM3:
    if meta.get("format") == FORMAT_NAME:
        architecture = dict(meta["config"])
        # files written before the mask threshold left the architecture config keep it there
        mask_threshold = meta.get("mask_threshold", architecture.pop("mask_threshold", 0.5))
        model = empty_model(config_from_dict(architecture))
        missing = tuple(meta.get("missing_components", ()))
        load_state_dict_strict(model, weights.as_dict(), _missing_pattern(missing))
        model.missing_components = missing
        model.mask_threshold = mask_threshold
        return model
    if any(k.startswith("detector.backbone.") for k in weights.keys()):
        return _from_official_state(weights.as_dict(), config)
    if meta.get("model_type") not in ("sam3", "sam3_video", None):
        raise ValueError(f"config model_type {meta.get('model_type')!r} is not a SAM 3 model")
    model = empty_model(config_from_hf(meta) if meta else SAM3Config())
    converted = hf_to_ours(weights.items())  # converted while read: see iter_safetensors
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
