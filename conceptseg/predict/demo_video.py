"""`conceptseg demo --video`: track a phrase through a generated concept-world clip with the embedded model;
writes an overlay MP4 and YT-VIS results."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from conceptseg.cli import UsageError
from conceptseg.data.synthetic import ConceptWorld
from conceptseg.data.synthetic_video import VideoSample
from conceptseg.model.sam3 import SAM3
from conceptseg.model.tracker.tracker import Tracker

DEMO_SIZE = 224
DEMO_FPS = 10.0  # the overlay's frame rate: slow enough to follow each object
MAX_CLIPS_SEARCHED = 200


def allow_untrained_tracker(model: SAM3, seed: int = 0) -> bool:
    """If `model` carries no tracker weights, give it random ones (seeded; the global RNG is left alone) and
    clear the flag, so that `VideoPredictor` accepts it. Returns whether it did: tracking is then meaningless,
    only the detections on each frame are. Until a trained tracker ships, this lets the video pipeline run."""
    if "tracker" not in model.missing_components:
        return False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights = Tracker(model.config).state_dict()
    model.tracker.load_state_dict(weights)
    model.missing_components = tuple(c for c in model.missing_components if c != "tracker")
    return True


def demo_clip(seed: int, num_frames: int) -> VideoSample:
    """The first positive clip of the test split (seed `seed`) with several objects, at least two the phrase
    names when there is one."""
    world = ConceptWorld(size=DEMO_SIZE, split="test", seed=seed, positive_fraction=1.0)
    fallback = None
    for index in range(MAX_CLIPS_SEARCHED):
        clip = world.video(index, num_frames=num_frames)
        if len(clip.target_indices) >= 2 and len(clip.instances) >= 3:
            return clip
        fallback = fallback or clip
    return fallback


def run_video_demo(args: argparse.Namespace, load_model: Callable[[], SAM3]) -> int:
    """Track the clip's phrase with the model `load_model` gives; write `overlay.mp4` and `results.json` to
    `args.out`."""
    try:
        import av  # noqa: F401  (only to fail early, before any work, with the extra to install)
    except ImportError as error:
        raise UsageError("demo --video writes an MP4 and needs PyAV: pip install 'conceptseg[video]'") from error
    from conceptseg.io.overlay import VideoWriter, draw_tracks
    from conceptseg.io.ytvis import YtvisWriter
    from conceptseg.predict.video import VideoPredictor

    if args.frames < 1:
        raise UsageError(f"--frames must be >= 1, got {args.frames}")
    model = load_model()
    if allow_untrained_tracker(model):
        warnings.warn("this model has no trained tracker: the demo runs a RANDOM one, so object ids and masks "
                      "after the first frames are not meaningful (only the detections are)", stacklevel=1)
    clip = demo_clip(args.seed, args.frames)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results_path, overlay_path = out / "results.json", out / "overlay.mp4"
    seen: set[int] = set()
    with VideoPredictor(model).start(list(clip.frames)) as session, \
            YtvisWriter(results_path, video_id=1, num_frames=len(clip.frames)) as results, \
            VideoWriter(overlay_path, DEMO_FPS, clip.frames.shape[1:3]) as overlay:
        session.add_prompt(0, text=clip.phrase)
        for frame in session.propagate():
            results.add_frame(frame.frame_index, frame.object_ids, [1] * len(frame.object_ids), frame.masks,
                              frame.scores)
            overlay.write(draw_tracks(frame.image, frame.object_ids, frame.masks, frame.boxes, frame.labels,
                                      frame.scores))
            seen.update(int(i) for i in frame.object_ids)
    print(f'tracked "{clip.phrase}" through {len(clip.frames)} generated frames: {len(seen)} object ids '
          f"({len(clip.target_indices)} matching objects in the clip, {len(clip.instances)} objects in all)")
    print(f"results -> {results_path.resolve()}, overlay -> {overlay_path.resolve()}")
    return 0
