"""Video cgF1 on volume IoU and phrase HOTA, on hand-computed cases."""

import json
import math

import numpy as np
import pytest

from conceptseg.eval import evaluate
from conceptseg.eval.hota import HotaSequence, hota
from conceptseg.eval.video_eval import volume_ious
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_video import Masklet, VideoPair, write_video_gt

SIZE = 10  # frames are SIZE x SIZE pixels

LEFT, RIGHT = (0, 0, 4, 4), (5, 5, 4, 4)  # (y, x, h, w) rectangles of 16 pixels


def frame_mask(rectangles: list[tuple[int, int, int, int]]) -> dict:
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    for y, x, h, w in rectangles:
        mask[y : y + h, x : x + w] = 1
    return encode_mask(mask)


def masklet(frames: list, score: float = 1.0, iscrowd: bool = False) -> Masklet:
    """A track from per-frame rectangles (or None where absent); boxes are the rectangles' boxes."""
    masks = [None if r is None else frame_mask([r]) for r in frames]
    boxes = np.array([[0, 0, 0, 0] if r is None else [r[1], r[0], r[3], r[2]] for r in frames], dtype=float)
    return Masklet(masks, boxes, np.array([r is not None for r in frames]), iscrowd, score)


def as_prediction(video_id: int, category_id: int, track: Masklet) -> dict:
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": track.score,
        "segmentations": track.masks,
        "bboxes": [box.tolist() if given else None for box, given in zip(track.boxes, track.has_box)],
    }


def score(tmp_path, pairs: list[VideoPair], predictions: list[dict]) -> dict:
    write_video_gt(tmp_path / "gt.json", pairs)
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    return evaluate(tmp_path / "gt.json", tmp_path / "pred.json", video=True)


def video_pair(video_id: int, category_id: int, tracks: list[Masklet], num_frames: int = 4) -> VideoPair:
    return VideoPair(video_id, category_id, f"phrase {category_id}", num_frames, SIZE, SIZE, tracks)


def smoothed_f1(tp: float, fp: float, fn: float) -> float:
    precision, recall = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    return 2 * precision * recall / (precision + recall + 1e-4)


def test_volume_iou_across_frames_with_missing_frames():
    # frame 0: GT only (16 px); frame 1: overlap 8 of union 24; frame 2: prediction only (4 px)
    target = masklet([(0, 0, 4, 4), (0, 0, 4, 4), None])
    predicted = masklet([None, (0, 2, 4, 4), (6, 6, 2, 2)])
    for iou_type in ("mask", "box"):
        assert volume_ious([predicted], [target], iou_type)[0, 0] == pytest.approx(8 / (16 + 24 + 4))
    assert volume_ious([masklet([None] * 3)], [masklet([None] * 3)], "mask")[0, 0] == 1  # official convention


def test_perfect_video_predictions(tmp_path):
    pairs = [
        video_pair(1, 1, [masklet([LEFT, LEFT, None, LEFT]), masklet([RIGHT] * 4)]),
        video_pair(1, 2, []),
        video_pair(2, 1, [masklet([None, RIGHT, RIGHT, RIGHT])]),
    ]
    predictions = [as_prediction(p.video_id, p.category_id, t) for p in pairs for t in p.masklets]
    results = score(tmp_path, pairs, predictions)
    assert results["cgF1"] == pytest.approx(100, abs=0.01)
    assert results["IL_MCC"] == pytest.approx(1, abs=1e-6)
    for prefix in ("", "box_"):
        assert results[prefix + "pHOTA"] == pytest.approx(1.0, abs=1e-12)
        assert results[prefix + "pDetA"] == pytest.approx(1.0, abs=1e-12)
        assert results[prefix + "pAssA"] == pytest.approx(1.0, abs=1e-12)


def test_missed_and_extra_frames_lower_the_volume_iou(tmp_path):
    # GT in frames 0-3 (64 px); the prediction matches frames 0-2 and adds 4 px in frame 4: IoU 48 / 68
    pairs = [video_pair(1, 1, [masklet([LEFT] * 4 + [None])], num_frames=5), video_pair(1, 2, [], num_frames=5)]
    predicted = masklet([LEFT, LEFT, LEFT, None, (8, 8, 2, 2)], score=0.9)
    results = score(tmp_path, pairs, [as_prediction(1, 1, predicted)])
    matched, missed = smoothed_f1(1, 0, 0), smoothed_f1(0, 1, 1)  # IoU 0.706 matches at tau <= 0.70
    assert results["pmF1"] == pytest.approx((5 * matched + 5 * missed) / 10)
    assert results["cgF1@75"] == 0


def test_swapped_identities_lower_assa_but_not_deta(tmp_path):
    pairs = [video_pair(1, 1, [masklet([LEFT] * 4), masklet([RIGHT] * 4)])]
    swapped = [masklet([LEFT, LEFT, RIGHT, RIGHT]), masklet([RIGHT, RIGHT, LEFT, LEFT])]
    results = score(tmp_path, pairs, [as_prediction(1, 1, track) for track in swapped])
    # each predicted track shares 2 of its 4 frames with each GT track: overlap 2 / (4 + 4 - 2)
    assert results["pDetA"] == pytest.approx(1.0)
    assert results["pAssA"] == pytest.approx(1 / 3)
    assert results["pHOTA"] == pytest.approx(math.sqrt(1 / 3))


def test_hota_with_a_partial_overlap(tmp_path):
    # frame 1: GT 42 px, prediction 29 px, overlap 21 -> IoU 0.42, a match for the 8 alphas 0.05 ... 0.40
    target = Masklet([frame_mask([(0, 0, 6, 7)])] * 2, np.array([[0, 0, 7, 6.0]] * 2), np.ones(2, bool))
    partial = frame_mask([(0, 0, 3, 7), (6, 0, 2, 4)])
    predicted = Masklet([target.masks[0], partial], np.array([[0, 0, 7, 6], [0, 0, 7, 8.0]]), np.ones(2, bool))
    results = score(tmp_path, [video_pair(1, 1, [target], num_frames=2)], [as_prediction(1, 1, predicted)])
    # 8 alphas: DetA = AssA = 1; 11 alphas: TP 1, FN 1, FP 1 -> DetA = 1/3 and AssA = 1 / (2 + 2 - 1)
    assert results["pDetA"] == pytest.approx(35 / 57)
    assert results["pAssA"] == pytest.approx(35 / 57)
    assert results["pHOTA"] == pytest.approx(35 / 57)
    assert results["pLocA"] == pytest.approx((8 * (1 + 0.42) / 2 + 11) / 19)


def test_hota_combines_sequences_by_summing_detections():
    perfect = HotaSequence([np.array([0])] * 2, [np.array([0])] * 2, [np.ones((1, 1))] * 2, 1, 1)
    false_positives = HotaSequence([np.zeros(0, int)] * 2, [np.array([0])] * 2, [np.zeros((0, 1))] * 2, 0, 1)
    results = hota([perfect, false_positives])
    assert results["DetA"] == pytest.approx(0.5)
    assert results["AssA"] == pytest.approx(1.0)
    assert results["HOTA"] == pytest.approx(math.sqrt(0.5))
    assert results["DetPr"] == pytest.approx(0.5) and results["DetRe"] == pytest.approx(1.0)


def test_score_of_exactly_one_half_counts_for_cgf1_but_not_for_hota(tmp_path):
    track = masklet([LEFT] * 4, score=0.5)
    results = score(tmp_path, [video_pair(1, 1, [masklet([LEFT] * 4)]), video_pair(1, 2, [])],
                    [as_prediction(1, 1, track)])
    assert results["IL_TP"] == 1 and results["pmF1"] == pytest.approx(smoothed_f1(1, 0, 0))
    assert results["pDetA"] == 0  # phrase HOTA keeps scores > 0.5 only


def test_crowd_masklet_is_left_out_of_video_cgf1(tmp_path):
    pairs = [video_pair(1, 1, [masklet([LEFT] * 4), masklet([RIGHT] * 4, iscrowd=True)]), video_pair(1, 2, [])]
    results = score(tmp_path, pairs, [as_prediction(1, 1, masklet([LEFT] * 4))])
    assert results["pmF1"] == pytest.approx(smoothed_f1(1, 0, 0))  # the crowd track is not a missed GT
