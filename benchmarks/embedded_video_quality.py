"""Video quality of a model on freshly generated concept-world clips: the memory loop against a no-memory baseline.

    python benchmarks/embedded_video_quality.py [--model M] [--clips 100] [--seed 4049]
                                                [--frames-min 32 --frames-max 64] [--out F]

Clips come from split "test" with a seed never used in training; each clip's length is drawn from
[frames-min, frames-max] by (seed, clip index), and each clip is one (video, phrase) pair, >= 30% of them
negative (`POSITIVE_FRACTION`). In every `BOUNCE_EVERY`-th clip the objects bounce off walls a little outside
the image (`ConceptWorld.video(motion="bouncing")`), so they leave it and come back: straight-line motion
gives long absences only in rare passes behind a larger object. A clip is in the re-entry subset when a target is
absent for >= `LONG_GAP` frames and then seen again (from its GT masks, whatever caused the absence).

Both methods read the same PNG frames from disk: `VideoPredictor` (text prompt on frame 0, propagated
forward) and `NoMemoryPredictor` (the detector on every frame, masks linked by IoU). Scores: video cgF1
(one datapoint per pair), pHOTA / pDetA / pAssA, identity switches per 100 frames of positive pairs, and
end-to-end frames per second (decode -> results). A model without tracker weights runs the loop with a random
tracker: its numbers then say nothing about tracking.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from conceptseg.data.synthetic import ConceptWorld
from conceptseg.data.synthetic_export import write_clip
from conceptseg.data.synthetic_video import VideoSample
from conceptseg.eval import evaluate
from conceptseg.eval.video_eval import evaluate_identity_switches
from conceptseg.eval.video_inference import run_video_inference
from conceptseg.io.saco_video import write_video_gt

SEED = 4049  # never used in training (training draws split "train" with its own seeds)
SIZE = 224
POSITIVE_FRACTION = 0.6  # -> about 40% negative pairs
BOUNCE_EVERY = 2  # clips 0, 2, 4, ... have objects that leave the image and come back
LONG_GAP = 8  # frames of absence that make a re-entry "long"
METRICS = ("cgF1", "IL_MCC", "pmF1", "pHOTA", "pDetA", "pAssA", "IDSW_per_100_frames", "fps")
SUBSET_METRICS = ("pHOTA", "pDetA", "pAssA", "IDSW_per_100_frames")


@dataclass
class ClipInfo:
    """What the benchmark knows of one clip: `longest_gap` is the longest absence of a target between two
    frames where it is seen (0 if none)."""

    index: int
    num_frames: int
    kind: str
    phrase: str
    bouncing: bool
    longest_gap: int

    @property
    def reentry(self) -> bool:
        return self.longest_gap >= LONG_GAP


def clip_length(seed: int, index: int, frames_min: int, frames_max: int) -> int:
    """The length of clip `index`: a pure function of (seed, index), uniform in [frames_min, frames_max]."""
    return int(np.random.default_rng([seed, index]).integers(frames_min, frames_max + 1))


def longest_reentry_gap(masks: np.ndarray) -> int:
    """The longest run of frames in which a track of `masks` (bool [N, T, H, W]) is absent between two frames
    where it is present."""
    longest = 0
    for track in masks:
        seen = np.flatnonzero(track.any(axis=(1, 2)))
        if len(seen) > 1:
            longest = max(longest, int(np.diff(seen).max()) - 1)
    return longest


def sample_clips(clips: int, seed: int = SEED, frames_min: int = 32,
                 frames_max: int = 64) -> Iterator[tuple[ClipInfo, VideoSample]]:
    """The benchmark's clips, one at a time (a clip's frames and masks take tens of MB)."""
    if not 1 <= frames_min <= frames_max:
        raise ValueError(f"need 1 <= frames_min <= frames_max, got {frames_min}, {frames_max}")
    world = ConceptWorld(size=SIZE, split="test", seed=seed, positive_fraction=POSITIVE_FRACTION)
    for index in range(clips):
        num_frames = clip_length(seed, index, frames_min, frames_max)
        bouncing = index % BOUNCE_EVERY == 0
        clip = world.video(index, num_frames=num_frames, motion="bouncing" if bouncing else "straight")
        yield ClipInfo(index, num_frames, clip.kind, clip.phrase, bouncing, longest_reentry_gap(clip.masks)), clip


def _video_predictors(model) -> tuple[dict, bool]:
    """The two methods on one model, and whether its tracker is a random stand-in."""
    from conceptseg.predict.demo_video import allow_untrained_tracker
    from conceptseg.predict.video import VideoPredictor
    from conceptseg.predict.video_baseline import NoMemoryPredictor

    untrained = allow_untrained_tracker(model)
    return {"memory": VideoPredictor(model), "no-memory": NoMemoryPredictor(model)}, untrained


def run(model, clips: int, seed: int, frames_min: int, frames_max: int, scratch: Path) -> dict:
    """Generate, predict (timed) and score; returns the JSON written by --out."""
    predictors, untrained = _video_predictors(model)
    predictions: dict[str, list[dict]] = {name: [] for name in predictors}
    seconds = dict.fromkeys(predictors, 0.0)
    pairs, infos, categories = [], [], {}
    for info, clip in sample_clips(clips, seed, frames_min, frames_max):
        frame_dir = scratch / "frames"
        category_id = categories.setdefault(clip.phrase, len(categories) + 1)
        pair = write_clip(clip, info.index + 1, category_id, frame_dir / f"video_{info.index:05d}")
        pair.extra["reentry"] = info.reentry
        del clip
        for name, predictor in predictors.items():
            started = time.perf_counter()
            predictions[name] += run_video_inference(predictor, [pair], frame_dir, progress=False)
            seconds[name] += time.perf_counter() - started
        shutil.rmtree(frame_dir)
        pairs.append(pair)
        infos.append(info)
        print(f"clip {info.index}: {info.num_frames} frames, {info.kind}, {clip_summary(info)}", flush=True)
    reentry_ids = {pair.video_id for pair, info in zip(pairs, infos) if info.reentry}
    write_video_gt(scratch / "gt.json", pairs)
    write_video_gt(scratch / "gt_reentry.json", [p for p in pairs if p.video_id in reentry_ids])
    frames = sum(info.num_frames for info in infos)
    results = {}
    for name in predictors:
        scores = _scores(scratch / "gt.json", predictions[name], METRICS[:-1])
        scores["fps"] = frames / seconds[name]
        subset = [p for p in predictions[name] if p["video_id"] in reentry_ids]
        reentry = _scores(scratch / "gt_reentry.json", subset, SUBSET_METRICS) if reentry_ids else {}
        results[name] = {"all": scores, "reentry": reentry, "seconds": seconds[name]}
    negatives = sum(info.kind != "positive" for info in infos)
    return {
        "seed": seed, "split": "test", "size": SIZE, "clips": clips, "frames": frames,
        "frames_min": frames_min, "frames_max": frames_max, "negative_share": negatives / clips,
        "reentry_clips": len(reentry_ids), "long_gap": LONG_GAP, "tracker_untrained": untrained,
        "threads": torch.get_num_threads(), "methods": results,
    }


def clip_summary(info: ClipInfo) -> str:
    gap = f"re-entry after {info.longest_gap} frames" if info.reentry else "no long re-entry"
    return f"{'bouncing, ' if info.bouncing else ''}{gap}"


def _scores(gt: Path, predictions: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    metrics = evaluate(gt, predictions, video=True) | evaluate_identity_switches(gt, predictions)
    return {key: float(metrics[key]) for key in keys}


def format_report(report: dict) -> str:
    """Both methods side by side: every metric on all clips, then the re-entry subset's."""
    methods = list(report["methods"])
    lines = [f"{'':28s}" + "".join(f"{name:>12s}" for name in methods)]
    for subset, keys in (("all", METRICS), ("reentry", SUBSET_METRICS)):
        for key in keys:
            values = [report["methods"][name][subset].get(key) for name in methods]
            cells = "".join(f"{'-' if v is None else f'{v:.3f}':>12s}" for v in values)
            lines.append(f"{subset + ' ' + key:28s}{cells}")
    lines.append(f"{report['clips']} clips, {report['frames']} frames, {report['negative_share']:.0%} negative "
                 f"pairs, {report['reentry_clips']} with a target absent >= {report['long_gap']} frames then back "
                 f"(seed {report['seed']}, {report['threads']} thread(s))")
    if report["tracker_untrained"]:
        lines.append("NOTE: the model has no tracker weights: the memory loop ran a RANDOM tracker, so its "
                     "numbers say nothing about tracking yet")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the embedded model)")
    parser.add_argument("--clips", type=int, default=100)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--frames-min", type=int, default=32)
    parser.add_argument("--frames-max", type=int, default=64)
    parser.add_argument("--out", type=Path, default=None, help="also write the report to this JSON file")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from conceptseg import load_model

    with tempfile.TemporaryDirectory() as scratch:
        report = run(load_model(args.model), args.clips, args.seed, args.frames_min, args.frames_max,
                     Path(scratch))
    print(format_report(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
