"""Run a video predictor over the (video, noun phrase) pairs of VEval GT, producing YT-VIS results.

As in SAM 3's VEval protocol, every pair is its own session prompted by its phrase on frame 0 and propagated
forward through the whole video; each masklet found is one result record of that pair.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from conceptseg.io.records import PathLike
from conceptseg.io.saco_video import VideoPair
from conceptseg.io.ytvis import YtvisWriter


def run_video_inference(predictor: Any, pairs: Iterable[VideoPair], frame_dir: PathLike,
                        progress: bool = True) -> list[dict]:
    """YT-VIS results of `predictor` (a `VideoPredictor`) on every pair; frames are `frame_dir / file_name`."""
    pairs = list(pairs)
    missing = [pair.video_id for pair in pairs if not pair.file_names]
    if missing:
        raise ValueError(f"video {missing[0]} of the GT lists no file_names: cannot find its frames")
    results: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for pair in tqdm(pairs, desc="videos", unit="pair", disable=not progress):
            path = Path(scratch) / f"{pair.video_id}_{pair.category_id}.json"
            frames = [Path(frame_dir) / name for name in pair.file_names]
            with predictor.start(frames) as session, YtvisWriter(path, pair.video_id, pair.num_frames) as writer:
                session.add_prompt(0, text=pair.noun_phrase)
                for frame in session.propagate():
                    writer.add_frame(frame.frame_index, frame.object_ids, [pair.category_id] * len(frame.object_ids),
                                     frame.masks, frame.scores)
            results += json.loads(path.read_text())
    return results
