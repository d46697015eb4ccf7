"""The no-memory video baseline (IoU linking of per-frame detections), identity switches, and the video
benchmark's clip sampler."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from conceptseg import SAM3, tiny_config
from conceptseg.eval.hota import HotaSequence, identity_switches
from conceptseg.eval.video_eval import evaluate_identity_switches
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_video import Masklet, VideoPair, write_video_gt
from conceptseg.predict.video_baseline import BaselineSettings, MaskLinker, NoMemoryPredictor
from conceptseg.predict.video_state import FrameResults

WIDTH = 20


def strips(*spans: tuple[int, int]) -> np.ndarray:
    """Masks [N, 1, WIDTH]: one row of pixels, each mask covering [start, stop)."""
    masks = np.zeros((len(spans), 1, WIDTH), dtype=bool)
    for mask, (start, stop) in zip(masks, spans):
        mask[0, start:stop] = True
    return masks


def test_ids_persist_and_a_new_object_gets_a_new_id():
    linker = MaskLinker(BaselineSettings())
    assert linker.link(0, strips((0, 5), (10, 15))).tolist() == [1, 2]
    # both moved a pixel (IoU 4/6), listed in the other order, and a third object appears
    assert linker.link(1, strips((11, 16), (17, 20), (1, 6))).tolist() == [2, 3, 1]


def test_a_link_needs_the_iou_setting():
    linker = MaskLinker(BaselineSettings(link_iou=0.3))
    linker.link(0, strips((0, 10)))
    assert linker.link(1, strips((7, 17))).tolist() == [2]  # IoU 3/17 < 0.3: a new object


def test_a_vanished_object_ends_after_max_missing_frames():
    linker = MaskLinker(BaselineSettings(max_missing=1))
    linker.link(0, strips((0, 5), (10, 15)))
    linker.link(1, strips((10, 15)))  # object 1 missing for one frame: still linkable
    assert linker.link(2, strips((0, 5), (10, 15))).tolist() == [1, 2]
    linker.link(3, strips((10, 15)))
    linker.link(4, strips((10, 15)))  # object 1 missing for two frames: ended
    assert 1 not in linker.tracks
    assert linker.link(5, strips((0, 5), (10, 15))).tolist() == [3, 2]


def test_hungarian_picks_the_globally_best_pairing():
    linker = MaskLinker(BaselineSettings())
    linker.link(0, strips((0, 10), (6, 16)))  # ids 1, 2
    # detection 0 overlaps track 1 most (IoU 0.67) but also track 2 (0.43); detection 1 overlaps only track 1
    # (0.5): greedy would give track 1 to detection 0 and a new id to detection 1
    assert linker.link(1, strips((2, 12), (0, 5))).tolist() == [2, 1]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="link_iou"):
        BaselineSettings(link_iou=1.5)
    with pytest.raises(ValueError, match="max_missing"):
        BaselineSettings(max_missing=-1)


def test_the_baseline_session_yields_frame_results_with_stable_ids():
    model = SAM3(dataclasses.replace(tiny_config(), d_model=64)).eval()
    frames = [np.full((40, 48, 3), 120, dtype=np.uint8)] * 3  # identical frames: identical detections
    with NoMemoryPredictor(model, BaselineSettings(detection_threshold=0.0)).start(frames) as session:
        session.add_prompt(0, text="red circle")
        results = list(session.propagate())
    assert [r.frame_index for r in results] == [0, 1, 2]
    assert all(isinstance(r, FrameResults) and r.masks.shape[1:] == (40, 48) for r in results)
    assert len(results[0].object_ids) > 0 and results[0].labels == ["red circle"] * len(results[0].object_ids)
    nonempty = results[0].masks.any(axis=(1, 2))
    np.testing.assert_array_equal(results[2].object_ids[nonempty], results[0].object_ids[nonempty])


def test_identity_switches_count_changes_of_the_matched_track():
    one = np.ones((1, 1))
    # GT track 0 is matched to predicted 0, then 1 (switch), unmatched, 1 again (no switch), 0 (switch); a
    # frame where its best IoU is below 0.5 counts as unmatched
    frames = [(0, 1.0), (1, 1.0), (None, 0.0), (1, 0.9), (0, 0.4), (0, 0.8)]
    sequence = HotaSequence(
        gt_ids=[np.array([0]) for _ in frames],
        pred_ids=[np.array([0 if pred is None else pred]) for pred, _ in frames],
        similarity=[one * iou for _, iou in frames], num_gt_ids=1, num_pred_ids=2,
    )
    assert identity_switches(sequence) == 2
    assert identity_switches(sequence, threshold=0.95) == 1  # frames 0 and 1 only


def test_identity_switches_from_files_per_100_frames(tmp_path):
    def track(present: list[bool]) -> Masklet:
        mask = np.zeros((4, 4), dtype=np.uint8)
        mask[:2, :2] = 1
        return Masklet([encode_mask(mask) if p else None for p in present],
                       np.array([[0, 0, 2, 2] if p else [0, 0, 0, 0] for p in present], dtype=float),
                       np.array(present))

    pairs = [VideoPair(1, 1, "thing", 4, 4, 4, [track([True] * 4)]), VideoPair(2, 1, "thing", 6, 4, 4, [])]
    write_video_gt(tmp_path / "gt.json", pairs)
    # the object is found as one track on frames 0-1 and another on frames 2-3: one switch in 4 positive frames
    predictions = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": t.masks}
                   for t in (track([True, True, False, False]), track([False, False, True, True]))]
    metrics = evaluate_identity_switches(tmp_path / "gt.json", predictions)
    assert metrics == {"IDSW": 1.0, "IDSW_frames": 4.0, "IDSW_per_100_frames": 25.0}


def load_benchmark():
    path = Path(__file__).parents[1] / "benchmarks" / "embedded_video_quality.py"
    spec = importlib.util.spec_from_file_location("embedded_video_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_sampler_has_negatives_and_long_re_entries():
    benchmark = load_benchmark()
    infos = [info for info, _ in benchmark.sample_clips(100)]  # the default settings
    assert sum(info.kind != "positive" for info in infos) >= 30
    assert any(info.reentry for info in infos)
    assert all(32 <= info.num_frames <= 64 for info in infos) and len({i.num_frames for i in infos}) > 10


def test_the_longest_re_entry_gap_comes_from_the_masks():
    benchmark = load_benchmark()
    masks = np.zeros((2, 12, 2, 2), dtype=bool)
    masks[0, [0, 1, 10]] = True  # absent on frames 2-9, then back: a gap of 8
    masks[1, 3:] = True  # enters and stays: no gap
    assert benchmark.longest_reentry_gap(masks) == 8
    assert benchmark.longest_reentry_gap(masks[1:]) == 0
