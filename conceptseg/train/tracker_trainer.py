"""Tracker training, SAM 2 style: prompt an object on frame 0 of a clip, track it through the clip with its
memory, correct it on a later frame or two, and supervise every prediction.

The backbone and the detector stay frozen: the ViT runs under no_grad, once per frame, and only the tracker
(`tracker.*`) and its neck (`backbone.tracker_neck.*`, unless `train_neck` is off) learn. Their features are
computed as the video loop computes them (`FrameStep._encode`: preprocess, ViT trunk, tracker neck), and each
clip runs through `Tracker.track_step` / `remember` as inference does, so gradients flow back through the
memories of the whole clip.

Losses per prediction (SAM 2's, weights 20 : 1 : 1 : 1): sigmoid focal and dice on the masks (upsampled to
the model's input size), L1 of the predicted IoU against the actual IoU of each output, and BCE of the object
score against "the object shows on this frame"; mask and IoU terms only where it shows. With several outputs
(one click, or tracking) only the output of the lowest mask loss is supervised, the IoU head on all of them.
Unlike SAM 2 the mask terms see the decoder's raw masks, also where the object score hides them, so the mask
head always learns. Terms are averaged over a clip's predictions, then over the clips of a step.

`TrackerTrainer` reuses `Trainer`'s loop (`run`), JSONL log and checkpoints (the whole model, EMA, optimiser,
RNG and stream position: resume is exact); it has its own parameter groups, step and evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from conceptseg.model.sam3 import SAM3
from conceptseg.model.tracker.tracker import MULTIMASK_MAX_POINTS, Tracker
from conceptseg.predict.transforms import preprocess_batch
from conceptseg.predict.video import VideoPredictor
from conceptseg.train.data import resize_masks
from conceptseg.train.losses import dice_loss, sigmoid_focal_loss
from conceptseg.train.tracker_data import (
    Prompt,
    TrackerExample,
    TrackerSource,
    centre_click,
    correction_clicks,
    mask_box,
)
from conceptseg.train.trainer import UNTRAINED_PREFIXES as TRACKER_PREFIXES
from conceptseg.train.trainer import Trainer, learning_rate, uses_weight_decay

LOSS_TERMS = ("mask_focal", "mask_dice", "iou", "object_score")
SAME_PLACE_LOGIT = 72.0  # attention logit of a query to the key at its own place (`look_up_same_place`)


@dataclass(frozen=True)
class TrackerLossWeights:
    """SAM 2's tracker loss weights."""

    mask_focal: float = 20.0
    mask_dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum of loss terms {name in LOSS_TERMS: value}."""
        return sum(getattr(self, name) * value for name, value in terms.items())


@dataclass
class TrackerTrainConfig:
    """Hyper-parameters of a tracker run (stored in checkpoints); LR schedule: `trainer.learning_rate`."""

    steps: int = 1000
    batch_size: int = 4  # clips per step
    num_frames: int = 8  # 1: the image stage (`frame_losses`: frame 0 of each clip, batched)
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_steps: int = 50
    decay_fraction: float = 0.3
    min_lr_ratio: float = 0.01
    clip_grad_norm: float = 1.0
    ema_decay: float = 0.998
    train_neck: bool = True  # also train the tracker neck (a third of the embedded model's step time)
    seed: int = 0
    save_every: int = 100
    eval_every: int = 250
    loss: TrackerLossWeights = field(default_factory=TrackerLossWeights)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrackerTrainConfig:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown tracker training options {sorted(unknown)}")
        loss = data.get("loss", {})
        if not isinstance(loss, TrackerLossWeights):
            loss = TrackerLossWeights(**loss)
        return cls(**{**data, "loss": loss})


@torch.no_grad()
def initialize_tracker(model: SAM3, seed: int) -> None:
    """Weights to train from, for a model whose checkpoint carried no tracker (its tracker is zeros): a
    freshly initialised tracker whose memory attention starts as a same-place look-up (`look_up_same_place`),
    and the tracker neck copied from the trained detector neck (the same architecture; SAM 3 builds one as a
    copy of the other). The model then counts its tracker as present."""
    torch.manual_seed(seed)
    model.tracker.load_state_dict(Tracker(model.config).state_dict())
    look_up_same_place(model.tracker)
    model.backbone.tracker_neck.load_state_dict(model.backbone.neck.state_dict())
    model.missing_components = tuple(name for name in model.missing_components if name != "tracker")


@torch.no_grad()
def look_up_same_place(tracker: Tracker) -> None:
    """Start the memory attention's cross-attention as a look-up of the same place in every memory.

    Queries and keys become one constant vector (zero weights, equal biases), so that only their rotary
    encoding sets the attention: it peaks where query and key share a grid cell and fades with distance
    (at head_dim 64, 48% of the weight on the cell itself and 98% on its 3 x 3 neighbourhood). What was at
    this place in the memories (the object's mask, through the values) then reaches the current frame from
    the first step, and training adds the appearance terms. From random projections the tracker followed
    the features alone for hundreds of steps (held-out later-frame IoU 0.18-0.26 after 100-420 steps,
    also with ground-truth masks in the memories); from this start, 0.66 after 100 steps.
    """
    for layer in tracker.transformer["encoder"].layers:
        attention = layer.cross_attn_image
        head_dim = attention.q_proj.out_features // attention.num_heads
        value = (SAME_PLACE_LOGIT / head_dim**0.5) ** 0.5  # q.k / sqrt(head_dim) = SAME_PLACE_LOGIT at one place
        for projection in (attention.q_proj, attention.k_proj):
            projection.weight.zero_()
            projection.bias.fill_(value)


def tracker_features(model: SAM3, frames: np.ndarray) -> list[torch.Tensor]:
    """Tracker-neck maps [T, C, 4g, 4g], [T, C, 2g, 2g], [T, C, g, g] of a clip uint8 [T, H, W, 3].

    The video loop's features (`SAM3.encode_trunk`, then `SAM3.tracker_features`), the frozen trunk under
    no_grad; the neck keeps its graph."""
    pixels = preprocess_batch(list(frames), model.config.vit.image_size).to(model.device, model.dtype)
    with torch.no_grad():
        trunk = model.encode_trunk(pixels)
    return model.tracker_features(trunk)


def prompt_inputs(prompt: Prompt, scale: float, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """`Tracker.track_step` keyword arguments of a prompt in clip pixels (model pixels = clip px * scale)."""
    if prompt.mask is not None:
        return {"mask": torch.from_numpy(prompt.mask)[None, None].to(like)}
    inputs = {}
    if prompt.box is not None:
        inputs["box"] = torch.from_numpy(prompt.box * scale)[None].to(like)
    if len(prompt.points):
        inputs["points"] = torch.from_numpy(prompt.points * scale)[None].to(like)
        inputs["point_labels"] = torch.from_numpy(prompt.point_labels)[None].to(like.device)
    return inputs


def mask_iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of bool masks [..., H, W] -> [...] (1 when both are empty)."""
    union = (predicted | target).flatten(-2).sum(-1)
    return torch.where(union > 0, (predicted & target).flatten(-2).sum(-1) / union.clamp(min=1), 1.0)


def prediction_losses(decoded: tuple[torch.Tensor, ...], target: torch.Tensor, visible: bool,
                      weights: TrackerLossWeights) -> dict[str, torch.Tensor]:
    """Loss terms of one mask-decoder call (masks [1, K, m, m], IoU [1, K], tokens, object score [1, 1])
    against the target [S, S] (area fractions); mask and IoU terms are zero where the object does not show."""
    masks, iou, _, object_score_logits = decoded
    presence = torch.full_like(object_score_logits, float(visible))
    terms = {"object_score": F.binary_cross_entropy_with_logits(object_score_logits, presence)}
    if not visible:
        return terms | {name: object_score_logits.new_zeros(()) for name in LOSS_TERMS[:3]}
    logits = F.interpolate(masks, size=target.shape[-2:], mode="bilinear", align_corners=False)[0]  # K, S, S
    targets = target.expand_as(logits)
    focal = sigmoid_focal_loss(logits, targets, weights.focal_alpha, weights.focal_gamma).flatten(1).mean(1)
    dice = dice_loss(logits, targets)
    best = torch.argmin(weights.mask_focal * focal + weights.mask_dice * dice)  # SAM: learn the best output
    actual = mask_iou(logits.detach() > 0, targets > 0.5)
    iou_error = (iou[0] - actual).abs().mean()
    return terms | {"mask_focal": focal[best], "mask_dice": dice[best], "iou": iou_error}


def clip_losses(model: SAM3, example: TrackerExample, weights: TrackerLossWeights
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """Prompt, track and correct one clip as inference would; the weighted loss and what to log: the terms,
    "loss" and "track_iou" (mean IoU of the tracked masks on the later frames where the object shows).

    A correction frame is supervised twice: tracked, then predicted from the correcting clicks. Memories are
    kept in float32 (inference stores bfloat16) so that their gradients are not rounded."""
    tracker, size = model.tracker, model.config.vit.image_size
    levels = tracker_features(model, example.frames)
    targets = resize_masks(example.masks, size).to(levels[0])  # [T, S, S]
    visible = example.masks.any(axis=(1, 2))
    scale = size / example.frames.shape[2]
    num_frames = len(example.frames)
    bank = tracker.new_memory_bank(num_frames=num_frames, memory_dtype=torch.float32)
    decoded: list[tuple[torch.Tensor, ...]] = []  # every mask-decoder output: all its masks are supervised
    hook = tracker.sam_mask_decoder.register_forward_hook(lambda _module, _inputs, out: decoded.append(out))
    sums: dict[str, torch.Tensor] = defaultdict(lambda: targets.new_zeros(()))
    count, tracked_iou = 0, []

    def supervise(t: int) -> None:
        nonlocal count
        for name, value in prediction_losses(decoded[-1], targets[t], bool(visible[t]), weights).items():
            sums[name] = sums[name] + value
        count += 1

    try:
        for t in range(num_frames):
            features = [level[t : t + 1] for level in levels]
            prompt = prompt_inputs(example.prompt, scale, levels[0]) if t == 0 else {}
            output = tracker.track_step(features, bank, t, **prompt)
            if "mask" not in prompt:  # a mask prompt is the output itself: nothing to learn on its frame
                supervise(t)
            predicted = output.high_res_mask_logits[0, 0].detach() > 0
            if t > 0 and visible[t]:
                tracked_iou.append(float(mask_iou(predicted, targets[t] > 0.5)))
            target = (targets[t] > 0.5).cpu().numpy()
            if t in example.correction_frames and target.any():  # clicks in model pixels
                clicks = correction_clicks(target, predicted.cpu().numpy(), example.rng(t))
                output = tracker.track_step(features, bank, t, **prompt_inputs(clicks, 1.0, levels[0]))
                supervise(t)
            if t < num_frames - 1:  # the last frame's memory would never be read
                tracker.remember(features, bank, t, output)
    finally:
        hook.remove()
    terms = {name: sums[name] / count for name in LOSS_TERMS}
    loss = weights.total(terms)
    logged = {name: value.item() for name, value in terms.items()} | {"loss": loss.item()}
    return loss, logged | ({"track_iou": float(np.mean(tracked_iou))} if tracked_iou else {})


def frame_losses(model: SAM3, examples: list[TrackerExample], weights: TrackerLossWeights
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The image stage (SAM 2 trains its SAM heads on images before videos): each example's frame-0 prompt
    (box or clicks) predicted without memory, the examples of one prompt shape in one batched decoder call
    (`Tracker.predict_masks`, as `track_step` decodes a prompted frame); terms as `clip_losses`, averaged over
    the examples."""
    if any(example.prompt.mask is not None for example in examples):
        raise ValueError("mask prompts teach the image stage nothing: train it with mask_fraction 0")
    size = model.config.vit.image_size
    frames = np.stack([example.frames[0] for example in examples])
    levels = tracker_features(model, frames)
    targets = resize_masks(np.stack([example.masks[0] for example in examples]), size).to(levels[0])
    scale = size / frames.shape[2]
    groups: dict[tuple[bool, int], list[int]] = defaultdict(list)  # (box, clicks) -> examples
    for index, example in enumerate(examples):
        groups[(example.prompt.box is not None, len(example.prompt.points))].append(index)
    sums: dict[str, torch.Tensor] = defaultdict(lambda: targets.new_zeros(()))
    for (has_box, clicks), indices in groups.items():
        prompts = [prompt_inputs(examples[i].prompt, scale, levels[0]) for i in indices]
        inputs = {name: torch.cat([prompt[name] for prompt in prompts]) for name in prompts[0]}
        masks, iou, object_scores = model.tracker.predict_masks(
            [level[indices] for level in levels], inputs.get("points"), inputs.get("point_labels"),
            inputs.get("box"), multimask=not has_box and clicks <= MULTIMASK_MAX_POINTS)
        for row, index in enumerate(indices):
            decoded = (masks[row : row + 1], iou[row : row + 1], None, object_scores[row : row + 1])
            for name, value in prediction_losses(decoded, targets[index], True, weights).items():
                sums[name] = sums[name] + value
    terms = {name: sums[name] / len(examples) for name in LOSS_TERMS}
    loss = weights.total(terms)
    return loss, {name: value.item() for name, value in terms.items()} | {"loss": loss.item()}


def freeze_all_but_tracker(model: SAM3, train_neck: bool = True) -> list[torch.nn.Module]:
    """Gradients and train mode (dropout) only for the tracker (and its neck); returns the trained modules."""
    model.eval().requires_grad_(False)
    modules = [model.tracker, model.backbone.tracker_neck] if train_neck else [model.tracker]
    for module in modules:
        module.train().requires_grad_(True)
    return modules


def tracker_state(model: SAM3) -> dict[str, torch.Tensor]:
    """The weights (and buffers) that tracker training changes."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(TRACKER_PREFIXES)}


class TrackerTrainer(Trainer):
    """Trains the tracker and its neck on a `TrackerSource`; checkpoints, logs and the EMA model: out_dir.

    A model without tracker weights (`missing_components` holds "tracker") starts from `initialize_tracker`.
    evaluate: optional callable run on the EMA model every `eval_every` steps and at the end, returning
    {name: {metric: value}} (`evaluate_tracking`), which is logged.
    """

    def __init__(self, model: SAM3, source: TrackerSource, config: TrackerTrainConfig, out_dir: str | Path,
                 evaluate: Callable[[SAM3], dict[str, dict[str, float]]] | None = None) -> None:
        # Trainer.__init__ is not called: it builds the detector's losses and parameter groups
        if "tracker" in model.missing_components:
            initialize_tracker(model, config.seed)
        self.model, self.source, self.config, self.evaluate = model, source, config, evaluate
        self.out_dir = Path(out_dir)
        groups: dict[bool, list[torch.nn.Parameter]] = {True: [], False: []}
        for module in freeze_all_but_tracker(model, config.train_neck):
            for submodule in module.modules():
                for name, param in submodule.named_parameters(recurse=False):
                    groups[uses_weight_decay(submodule, name)].append(param)
        self.optimizer = torch.optim.AdamW([{"params": groups[True], "weight_decay": config.weight_decay},
                                            {"params": groups[False], "weight_decay": 0.0}], lr=config.lr)
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        ema_params = dict(self.ema.named_parameters())
        names = [name for name, param in model.named_parameters() if param.requires_grad]
        self.trained = [dict(model.named_parameters())[name] for name in names]  # in the EMA's order
        self.ema_trained = [ema_params[name] for name in names]
        self.step, self.position, self.elapsed = 0, 0, 0.0
        self.attribute_heads = None  # for Trainer.state_dict / load_state_dict

    def train_step(self) -> dict[str, float]:
        """One optimisation step on the next `batch_size` clips (one backward pass per clip: less memory), or
        on their first frames (the image stage)."""
        lr = learning_rate(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        logged: dict[str, list[float]] = defaultdict(list)
        examples = [self.source.example(self.position + i) for i in range(self.config.batch_size)]
        if self.config.num_frames == 1:  # the image stage: one batched pass
            loss, terms = frame_losses(self.model, examples, self.config.loss)
            loss.backward()
            logged = {name: [value] for name, value in terms.items()}
        else:
            for example in examples:
                loss, terms = clip_losses(self.model, example, self.config.loss)
                (loss / self.config.batch_size).backward()
                for name, value in terms.items():
                    logged[name].append(value)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, self.config.clip_grad_norm)
        self.optimizer.step()
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():  # else the EMA weights join the autograd graph
            torch._foreach_lerp_(self.ema_trained, self.trained, 1 - decay)
        self.step += 1
        self.position += self.config.batch_size
        means = {name: float(np.mean(values)) for name, values in logged.items()}
        return means | {"lr": lr, "grad_norm": float(grad_norm)}

    def _run_evaluation(self, bar: tqdm) -> None:
        results = self.evaluate(self.ema)
        self._log({"kind": "eval", "step": self.step, **results})
        summary = ", ".join(f"{name} IoU {metrics['iou']:.3f}" for name, metrics in results.items())
        bar.write(f"step {self.step}: EMA {summary}")


def tracking_eval_set(source: TrackerSource, count: int) -> list[TrackerExample]:
    """The first `count` examples of a source (of a test-split world); their clips and objects are used."""
    return [source.example(position) for position in range(count)]


def evaluate_tracking(model: SAM3, examples: list[TrackerExample]) -> dict[str, dict[str, float | None]]:
    """Track each example's object through its clip with the video predictor (the inference path), from one
    positive click at its centre (`centre_click`) and from its box on frame 0.

    Per prompt: iou, the mean IoU over the later frames where the object shows; first_iou, on frame 0;
    absent_accuracy, the share of the frames where it does not show with no output for it (None: none)."""
    predictor = VideoPredictor(model)
    results = {}
    for name in ("click", "box"):
        ious, first, absent = [], [], []
        for example in examples:
            mask = example.masks[0]
            prompt = {"points": [centre_click(mask)], "point_labels": [1]} if name == "click" else \
                {"boxes": [mask_box(mask).tolist()]}
            with predictor.start(list(example.frames)) as session:
                session.add_prompt(0, obj_id=1, **prompt)
                for frame in session.propagate():
                    ids = frame.object_ids.tolist()
                    target = example.masks[frame.frame_index]
                    if not target.any():
                        absent.append(1 not in ids)
                        continue
                    shown = frame.masks[ids.index(1)] if 1 in ids else np.zeros_like(target)
                    iou = float(mask_iou(torch.from_numpy(np.asarray(shown)), torch.from_numpy(target)))
                    (first if frame.frame_index == 0 else ious).append(iou)
        results[name] = {"iou": float(np.mean(ious)) if ious else None, "first_iou": float(np.mean(first)),
                         "absent_accuracy": float(np.mean(absent)) if absent else None}
    return results
