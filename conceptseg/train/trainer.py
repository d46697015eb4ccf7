"""The training loop: AdamW with parameter groups, warm-up + decay, gradient clipping, EMA weights, periodic
evaluation, JSONL logs and checkpoints that resume exactly.

Exact resume: the data of step s depends only on the stream position (see `data.py`: no global RNG is used),
the learning rate only on s, and the checkpoint holds the model, EMA, optimizer, torch RNG state and position. So k steps + save + resume
+ n - k steps give the same weights, bit for bit, as n steps in one go (on the same machine and thread count).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from conceptseg.checkpoint import save_model
from conceptseg.data.synthetic_phrases import ATTRIBUTE_VOCABULARIES
from conceptseg.model.common import MultiheadAttention, inverse_sigmoid
from conceptseg.model.configs import config_to_dict
from conceptseg.model.detector import ImageEncoding
from conceptseg.model.sam3 import SAM3
from conceptseg.train.data import Batch, TrainingSource, collate
from conceptseg.train.losses import AttributeHeads, LossWeights, SetCriterion

CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.jsonl"
MODEL_DIR = "model"  # EMA weights in `save_model` format, loadable with conceptseg.load_model
UNTRAINED_PREFIXES = ("tracker.", "backbone.tracker_neck.")  # not used by `detect`: left as they are
# classes of the attribute loss's heads: the concept world's vocabularies, the only data with attribute labels
# (`Targets.attributes` columns, in this order)
CONCEPT_WORLD_ATTRIBUTES = {name: len(words) for name, words in ATTRIBUTE_VOCABULARIES.items()}


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in every checkpoint)."""

    steps: int = 3000
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.05
    vision_lr_scale: float = 1.0  # LR multiplier of the ViT trunk (SAM 3 fine-tuning: 0.5)
    text_lr_scale: float = 1.0  # LR multiplier of the CLIP text transformer (SAM 3 fine-tuning: 0.1)
    train_only: str = ""  # comma-separated module/parameter names to train; the rest get requires_grad off ("": all)
    warmup_steps: int = 200
    decay_fraction: float = 0.3  # cosine decay over this last share of the steps; 1.0 = cosine after warm-up
    min_lr_ratio: float = 0.01
    clip_grad_norm: float = 1.0
    ema_decay: float = 0.999
    mask_size: int | None = None  # side of the mask targets; None = the model's mask size
    seed: int = 0
    save_every: int = 250
    eval_every: int = 500
    loss: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}")
        loss = data.get("loss", {})
        if not isinstance(loss, LossWeights):
            names = {f.name for f in dataclasses.fields(LossWeights)}
            if set(loss) - names:
                raise ValueError(f"unknown loss weights {sorted(set(loss) - names)}; known: {sorted(names)}")
            loss = LossWeights(**loss)
        return cls(**{**data, "loss": loss})


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up to `lr`, constant, then cosine decay to `min_lr_ratio * lr` over the last `decay_fraction`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_start = max(config.warmup_steps, config.steps - round(config.decay_fraction * config.steps))
    if step < decay_start:
        return config.lr
    progress = min((step - decay_start) / max(config.steps - decay_start, 1), 1.0)
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def uses_weight_decay(module: nn.Module, name: str) -> bool:
    """Weight decay on linear/conv/attention matrices only: not on norms, biases, embeddings or position tables."""
    if isinstance(module, MultiheadAttention):
        return name == "in_proj_weight"
    return name == "weight" and isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))


def _within(name: str, prefix: str) -> bool:
    """Whole dotted components: "detector.geometry_encoder" holds its parameters, "detector.geometry" nothing."""
    return name == prefix or name.startswith(prefix + ".")


def parameter_groups(model: SAM3, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups by (weight decay, LR scale); the tracker and its neck are not trained here, nor anything
    outside the modules or parameters `config.train_only` names, when it names some."""
    only = [prefix.strip() for prefix in config.train_only.split(",") if prefix.strip()]
    names = [name for name, _ in model.named_parameters()]
    unmatched = [prefix for prefix in only if not any(_within(name, prefix) for name in names)]
    if unmatched:
        raise ValueError(f"train_only: no module or parameter {unmatched} (e.g. detector.geometry_encoder)")
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{name}"
            if not param.requires_grad or full_name.startswith(UNTRAINED_PREFIXES):
                continue
            if only and not any(_within(full_name, prefix) for prefix in only):
                continue
            scale = 1.0
            if full_name.startswith("backbone.trunk."):
                scale = config.vision_lr_scale
            elif full_name.startswith("detector.text_encoder.encoder."):
                scale = config.text_lr_scale
            groups.setdefault((uses_weight_decay(module, name), scale), []).append(param)
    return [
        {"params": params, "weight_decay": config.weight_decay if decay else 0.0, "lr_scale": scale}
        for (decay, scale), params in groups.items()
    ]


@torch.no_grad()
def initialize_from_scratch(model: SAM3) -> None:
    """Initialisation for training without pretrained weights (the model's defaults suit loading weights).

    Position tables get small random values instead of zeros, token embeddings CLIP's std 0.02, the box
    refinement head starts at zero (first boxes = reference boxes) and reference boxes spread over the image.
    """
    nn.init.normal_(model.backbone.trunk.pos_embed, std=0.02)
    text = model.detector.text_encoder.encoder
    nn.init.normal_(text.token_embedding.weight, std=0.02)
    nn.init.normal_(text.positional_embedding, std=0.01)
    decoder = model.detector.decoder
    nn.init.zeros_(decoder.bbox_embed.layers[-1].weight)
    nn.init.zeros_(decoder.bbox_embed.layers[-1].bias)
    reference = decoder.reference_points.weight
    centres = torch.rand_like(reference[:, :2])
    sizes = torch.empty_like(reference[:, 2:]).uniform_(0.05, 0.3)
    reference.copy_(inverse_sigmoid(torch.cat((centres, sizes), dim=1)))


class Trainer:
    """Trains `model.detect` on a `TrainingSource`; writes checkpoints, logs and the EMA model to `out_dir`.

    evaluate: optional callable run on the EMA model every `eval_every` steps and at the end; it returns
    {name: {metric: value}} (e.g. {"text": {"cgF1": ...}}), which is logged.
    With a distillation loss weight the teacher is a frozen copy of `model` as given (build the Trainer before
    loading a checkpoint to resume, as `conceptseg train` does, so that the teacher stays the starting weights).
    attribute_classes: {attribute: number of classes} of the attribute loss's heads (used iff its weight > 0).
    """

    def __init__(
        self,
        model: SAM3,
        source: TrainingSource,
        config: TrainConfig,
        out_dir: str | Path,
        evaluate: Callable[[SAM3], dict[str, dict[str, float]]] | None = None,
        attribute_classes: dict[str, int] = CONCEPT_WORLD_ATTRIBUTES,
    ) -> None:
        self.model = model.train()
        self.source = source
        self.config = config
        self.out_dir = Path(out_dir)
        self.evaluate = evaluate
        # the attribute loss's classifiers train with the model but are not part of it (nor of its EMA)
        self.attribute_heads = None
        if config.loss.attribute:
            self.attribute_heads = AttributeHeads(model.config.d_model, attribute_classes).to(model.device)
        self.criterion = SetCriterion(config.loss, attribute_heads=self.attribute_heads)
        groups = parameter_groups(model, config)
        if self.attribute_heads:
            groups.append({"params": list(self.attribute_heads.parameters()), "weight_decay": 0.0, "lr_scale": 1.0})
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999))
        # kept apart from the optimizer's groups so that a resumed run uses the current config's values
        self.group_settings = [(group["lr_scale"], group["weight_decay"]) for group in groups]
        self.trained = [p for group in self.optimizer.param_groups for p in group["params"]]
        trained_ids = {id(p) for p in self.trained}
        for param in model.parameters():
            # no gradients where nothing is updated: a frozen backbone then costs no backward pass
            param.requires_grad_(id(param) in trained_ids)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.teacher = copy.deepcopy(self.ema) if config.loss.distillation else None
        names = {id(p): n for n, p in model.named_parameters()}
        ema_params = dict(self.ema.named_parameters())
        self.model_trained = [p for p in self.trained if id(p) in names]
        self.ema_trained = [ema_params[names[id(p)]] for p in self.model_trained]
        self.step = 0
        self.position = 0  # examples consumed from the source
        self.elapsed = 0.0  # training seconds over all sessions of the run
        self.mask_size = config.mask_size or model.config.mask_size

    def train_step(self) -> dict[str, float]:
        """One optimisation step on the next batch; returns the logged loss terms, LR and gradient norm."""
        examples = [self.source.example(self.position + i) for i in range(self.config.batch_size)]
        batch = collate(examples, self.model.config.vit.image_size, self.mask_size)
        lr = learning_rate(self.step, self.config)
        for group, (scale, weight_decay) in zip(self.optimizer.param_groups, self.group_settings):
            group["lr"], group["weight_decay"] = lr * scale, weight_decay
        outputs = detect_batch(self.model, batch)
        teacher_outputs = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_outputs = detect_batch(self.teacher, batch)
        loss, terms = self.criterion(outputs, batch.targets.to(self.model.device), teacher_outputs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, self.config.clip_grad_norm)
        self.optimizer.step()
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():  # else every step chains the EMA onto the autograd graph of the weights
            torch._foreach_lerp_(self.ema_trained, self.model_trained, 1 - decay)
        self.step += 1
        self.position += len(examples)
        return {**terms, "lr": lr, "grad_norm": float(grad_norm)}

    def run(self, progress: bool = True, until: int | None = None) -> None:
        """Train until `config.steps` (or stop early after step `until`; the schedule stays sized to `config.steps`),
        evaluating and checkpointing on schedule; the last step's checkpoint and EMA model are saved."""
        last = min(until, self.config.steps) if until is not None else self.config.steps
        self.out_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=last, initial=self.step, disable=not progress, dynamic_ncols=True)
        smoothed: dict[str, float] = {}
        while self.step < last:
            started = time.perf_counter()
            terms = self.train_step()
            self.elapsed += time.perf_counter() - started
            record = {"kind": "train", "step": self.step, "time": round(self.elapsed, 3), **terms}
            self._log(record)
            for key in [k for k in ("loss", "classification", "presence", "mask_dice", "pattern_accuracy") if k in terms]:
                smoothed[key] = terms[key] if key not in smoothed else 0.9 * smoothed[key] + 0.1 * terms[key]
            bar.set_postfix({k[:5]: f"{v:.3g}" for k, v in smoothed.items()} | {"lr": f"{terms['lr']:.2g}"})
            bar.update()
            if self.step % self.config.save_every == 0 or self.step == last:
                self.save()
            if self.evaluate and (self.step % self.config.eval_every == 0 or self.step == self.config.steps):
                self._run_evaluation(bar)
        bar.close()

    def _run_evaluation(self, bar: tqdm) -> None:
        results = self.evaluate(self.ema)
        self._log({"kind": "eval", "step": self.step, **results})
        summary = ", ".join(f"{name} cgF1 {metrics['cgF1']:.1f}" for name, metrics in results.items())
        bar.write(f"step {self.step}: EMA {summary}")

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / LOG_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "position": self.position,
            "elapsed": self.elapsed,
            "train_config": dataclasses.asdict(self.config),
            "model_config": config_to_dict(self.model.config),
            "torch_rng": torch.get_rng_state(),
            **({"attribute_heads": self.attribute_heads.state_dict()} if self.attribute_heads else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.attribute_heads:
            self.attribute_heads.load_state_dict(state["attribute_heads"])
        self.step, self.position, self.elapsed = state["step"], state["position"], state["elapsed"]
        torch.set_rng_state(state["torch_rng"])
        self._truncate_log()

    def save(self) -> None:
        """Write the checkpoint (atomically) and the EMA model."""
        path = self.out_dir / CHECKPOINT_FILE
        torch.save(self.state_dict(), path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)
        save_model(self.ema, self.out_dir / MODEL_DIR)

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint we resume from (a crash leaves them behind)."""
        path = self.out_dir / LOG_FILE
        if path.exists():
            lines = path.read_text().splitlines(keepends=True)
            path.write_text("".join(line for line in lines if json.loads(line)["step"] <= self.step))


def detect_batch(model: SAM3, batch: Batch) -> dict[str, torch.Tensor]:
    """`model.detect` on a batch, plus the fusion encoder's inputs that the alignment and attribute losses pool:
    image_tokens [B, G*G, C] (the coarsest neck level), text_tokens [B, L, C] and text_padding [B, L]. Prompt
    boxes drawn on other images (`batch.prompt_rows`) are encoded on those."""
    image = model.encode_image(batch.pixel_values.to(model.device))
    exemplars = None
    if batch.prompt_rows is not None:
        references = model.encode_image(batch.prompt_pixel_values.to(model.device))
        drawn_on = with_rows(image, batch.prompt_rows.to(model.device), references)
        exemplars = model.encode_exemplars(drawn_on, batch.prompt_boxes, batch.prompt_labels)
    text = model.encode_text(batch.input_ids)
    # the image tokens as the fusion encoder receives them (its first argument), a view of the coarsest neck level
    image_tokens: list[torch.Tensor] = []
    fusion_encoder = model.detector.fusion_encoder
    hook = fusion_encoder.register_forward_pre_hook(lambda _, inputs: image_tokens.append(inputs[0]))
    try:
        if exemplars is None:
            outputs = model.detect(image, text, batch.prompt_boxes, batch.prompt_labels)
        else:
            outputs = model.detect(image, text, exemplars=exemplars)
    finally:
        hook.remove()
    return outputs | {"image_tokens": image_tokens[-1], "text_tokens": text.tokens, "text_padding": text.padding}


def with_rows(image: ImageEncoding, rows: torch.Tensor, other: ImageEncoding) -> ImageEncoding:
    """`image` with its images `rows` replaced by `other`'s, in order (differentiable)."""
    levels = [level.index_copy(0, rows, replacement) for level, replacement in zip(image.levels, other.levels)]
    return ImageEncoding(image.trunk.index_copy(0, rows, other.trunk), levels, image.pos)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `Trainer.save`: tensors and plain Python values only."""
    return torch.load(path, map_location="cpu", weights_only=True)
