"""Image cgF1 on hand-computed cases, the Gold oracle, and properties that must hold for any input."""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conceptseg.eval import evaluate
from conceptseg.io.rle import encode_mask
from conceptseg.io.saco_image import ImagePair, Instance, write_image_gt

SIZE = 16  # images are SIZE x SIZE pixels


def rect(y: int, x: int, h: int, w: int) -> dict:
    """RLE of a filled rectangle; its box is exactly [x, y, w, h]."""
    mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return encode_mask(mask)


def instance(y: int, x: int, h: int, w: int, iscrowd: bool = False) -> Instance:
    return Instance(rect(y, x, h, w), [float(x), float(y), float(w), float(h)], iscrowd)


def pair(pair_id: int, instances: list[Instance], exhaustive: bool = True) -> ImagePair:
    return ImagePair(pair_id, f"img{pair_id}.jpg", f"phrase {pair_id}", SIZE, SIZE, exhaustive, list(instances))


def prediction(pair_id: int, mask: dict, score: float = 0.9) -> dict:
    return {"image_id": pair_id, "category_id": 1, "segmentation": mask, "score": score}


def score(tmp_path: Path, gt_sets: list[list[ImagePair]], predictions: list[dict]) -> dict:
    paths = []
    for index, pairs in enumerate(gt_sets):
        paths.append(tmp_path / f"gt_{index}.json")
        write_image_gt(paths[-1], pairs)
    pred_path = tmp_path / "pred.json"
    pred_path.write_text(json.dumps(predictions))
    return evaluate(paths, pred_path)


def smoothed_f1(tp: float, fp: float, fn: float) -> float:
    """The official per-threshold F1, with its 1e-4 smoothing terms."""
    precision, recall = tp / (tp + fp + 1e-4), tp / (tp + fn + 1e-4)
    return 2 * precision * recall / (precision + recall + 1e-4)


def mcc(tp: int, fp: int, tn: int, fn: int) -> float:
    return (tp * tn - fp * fn) / (math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)) + 1e-6)


A, B, C = instance(0, 0, 4, 4), instance(8, 8, 5, 3), instance(2, 9, 3, 6)


def test_perfect_predictions_score_100(tmp_path):
    gt = [pair(1, [A, B]), pair(2, [C]), pair(3, [])]
    predictions = [prediction(1, A.mask), prediction(1, B.mask), prediction(2, C.mask, 0.6)]
    results = score(tmp_path, [gt], predictions)
    assert results["cgF1"] == pytest.approx(100 * smoothed_f1(3, 0, 0) * mcc(2, 0, 1, 0), abs=1e-9)
    assert results["cgF1"] == pytest.approx(100, abs=0.01)
    assert results["box_cgF1"] == pytest.approx(results["cgF1"], abs=1e-9)
    assert results["IL_MCC"] == pytest.approx(1, abs=1e-6)
    assert (results["IL_TP"], results["IL_TN"], results["IL_FP"], results["IL_FN"]) == (2, 1, 0, 0)


def test_all_negative_pairs_without_predictions(tmp_path):
    results = score(tmp_path, [[pair(1, []), pair(2, []), pair(3, [])]], [])
    assert results["IL_TN"] == 3
    assert results["IL_MCC"] == 0 and results["cgF1"] == 0 and results["IL_FPR"] == 0
    assert results["positive_macro_F1"] == -1  # undefined: no pair has both GT and predictions


def test_all_negative_pairs_with_a_false_positive(tmp_path):
    results = score(tmp_path, [[pair(1, []), pair(2, []), pair(3, [])]], [prediction(2, A.mask)])
    assert (results["IL_FP"], results["IL_TN"]) == (1, 2)
    assert results["IL_FPR"] == pytest.approx(1 / 3, abs=1e-6)
    assert results["cgF1"] == 0 and results["precision"] == 0


def test_false_positive_on_a_negative_costs_mcc_but_not_pmf1(tmp_path):
    gt = [pair(1, [A]), pair(2, [B]), pair(3, []), pair(4, [])]
    predictions = [prediction(1, A.mask), prediction(2, B.mask), prediction(3, C.mask)]
    results = score(tmp_path, [gt], predictions)
    assert results["IL_MCC"] == pytest.approx(mcc(2, 1, 1, 0))  # = 2 / sqrt(12)
    assert results["pmF1"] == pytest.approx(smoothed_f1(2, 0, 0))
    assert results["precision"] == pytest.approx(2 / (3 + 1e-4))  # the overall precision does see the FP
    assert results["cgF1"] == pytest.approx(100 * smoothed_f1(2, 0, 0) * mcc(2, 1, 1, 0))


def test_positive_without_prediction_counts_false_negatives(tmp_path):
    gt = [pair(1, [A]), pair(2, [B, C]), pair(3, [])]
    results = score(tmp_path, [gt], [prediction(1, A.mask)])
    assert results["IL_MCC"] == pytest.approx(0.5, abs=1e-6)  # TP 1, FN 1, TN 1
    assert results["pmF1"] == pytest.approx(smoothed_f1(1, 0, 2))
    assert results["cgF1"] == pytest.approx(100 * smoothed_f1(1, 0, 2) * mcc(1, 0, 1, 1))
    assert results["positive_macro_F1"] == pytest.approx(smoothed_f1(1, 0, 0))  # only pair 1 has both


def test_duplicate_prediction_is_a_false_positive(tmp_path):
    gt = [pair(1, [A]), pair(2, [])]
    results = score(tmp_path, [gt], [prediction(1, A.mask), prediction(1, A.mask, 0.8)])
    assert results["pmF1"] == pytest.approx(smoothed_f1(1, 1, 0))  # about 2/3
    assert results["cgF1"] == pytest.approx(100 * smoothed_f1(1, 1, 0) * mcc(1, 0, 1, 0))


def test_crowd_gt_is_left_out_of_matching(tmp_path):
    crowd = instance(8, 0, 6, 6, iscrowd=True)
    gt = [pair(1, [A, crowd]), pair(2, [crowd]), pair(3, [])]
    # a prediction on the crowd region is a false positive, and a crowd-only pair is a negative
    results = score(tmp_path, [gt], [prediction(1, A.mask), prediction(1, crowd.mask)])
    assert results["num_positives"] == 1
    assert (results["IL_TP"], results["IL_TN"]) == (1, 2)
    assert results["pmF1"] == pytest.approx(smoothed_f1(1, 1, 0))


def test_scores_below_one_half_are_ignored_and_one_half_counts(tmp_path):
    gt = [pair(1, [A]), pair(2, [B]), pair(3, [])]
    predictions = [prediction(1, A.mask, 0.5), prediction(2, B.mask, 0.4999), prediction(3, C.mask, 0.3)]
    results = score(tmp_path, [gt], predictions)
    assert (results["IL_TP"], results["IL_FN"], results["IL_TN"], results["IL_FP"]) == (1, 1, 1, 0)
    assert results["cgF1"] == pytest.approx(100 * smoothed_f1(1, 0, 1) * mcc(1, 0, 1, 1))


def test_iou_thresholds_split_at_the_match_iou(tmp_path):
    # the prediction covers 18 of the 25 GT pixels: IoU 0.72, a match at tau = 0.50 ... 0.70 only
    gt = [pair(1, [instance(0, 0, 5, 5)]), pair(2, [])]
    partial = np.zeros((SIZE, SIZE), dtype=np.uint8)
    partial[0:5, 0:5] = 1
    partial[4, 0:5] = 0
    partial[3, 0:2] = 0
    results = score(tmp_path, [gt], [prediction(1, encode_mask(partial))])
    assert results["pmF1"] == pytest.approx((5 * smoothed_f1(1, 0, 0) + 5 * smoothed_f1(0, 1, 1)) / 10)
    assert results["cgF1@50"] == pytest.approx(100 * smoothed_f1(1, 0, 0) * mcc(1, 0, 1, 0))
    assert results["cgF1@75"] == 0


def test_gold_oracle_over_three_gt_sets(tmp_path):
    X, Y, Z = A, B, C
    set_a = [pair(1, [X]), pair(2, [X]), pair(3, []), pair(4, []), pair(5, [X])]
    set_b = [pair(1, [X, Y]), pair(2, [X]), pair(3, [], exhaustive=False), pair(4, []), pair(5, [X])]
    set_c = [pair(1, [Z]), pair(2, []), pair(3, []), pair(4, []), pair(5, [X])]
    predictions = [prediction(1, X.mask), prediction(1, Y.mask), prediction(3, Z.mask), prediction(5, X.mask)]
    # pair 1 takes set b (perfect), pair 2 takes set c (a true negative), pair 3 is not exhaustive in b
    oracle = score(tmp_path, [set_a, set_b, set_c], predictions)
    assert oracle["num_datapoints"] == 4
    assert (oracle["IL_TP"], oracle["IL_TN"], oracle["IL_FP"], oracle["IL_FN"]) == (2, 2, 0, 0)
    assert oracle["cgF1"] == pytest.approx(100 * smoothed_f1(3, 0, 0) * mcc(2, 0, 2, 0))
    # against set a alone: pair 1 has an FP, pair 2 a FN, pair 3 is a false-positive negative
    single = score(tmp_path, [set_a], predictions)
    assert single["cgF1"] == pytest.approx(100 * smoothed_f1(2, 1, 1) * mcc(2, 1, 1, 1))  # about 11.11
    assert single["cgF1"] == pytest.approx(100 / 9, abs=0.01)


def test_oracle_keeps_the_first_set_on_ties(tmp_path):
    # the prediction on pair 1 misses in both sets (local F1 0 in each), so set a and its single FN stay
    D = instance(12, 0, 3, 3)
    set_a = [pair(1, [A]), pair(2, [C]), pair(3, [])]
    set_b = [pair(1, [A, B]), pair(2, [C]), pair(3, [])]
    results = score(tmp_path, [set_a, set_b], [prediction(1, D.mask), prediction(2, C.mask)])
    assert results["pmF1"] == pytest.approx(smoothed_f1(1, 1, 1))
    assert results["pmF1"] != pytest.approx(smoothed_f1(1, 1, 2))


# ---- properties -------------------------------------------------------------------------------------

rectangles = st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 8), st.integers(1, 8))
scored_rectangles = st.tuples(rectangles, st.floats(0, 1))
datasets = st.lists(
    st.tuples(st.lists(rectangles, max_size=3), st.lists(scored_rectangles, max_size=4)), min_size=1, max_size=6
)


def score_in_memory(dataset: list, extra: list[dict] = (), order=None) -> dict:
    gt = [pair(index, [instance(*r) for r in gt_rects]) for index, (gt_rects, _) in enumerate(dataset)]
    predictions = [
        prediction(index, rect(*r), s) for index, (_, scored) in enumerate(dataset) for r, s in scored
    ] + list(extra)
    if order is not None:
        predictions = [predictions[i] for i in order]
    with tempfile.TemporaryDirectory() as directory:
        write_image_gt(Path(directory) / "gt.json", gt)
        return evaluate(Path(directory) / "gt.json", predictions)


@settings(max_examples=60, deadline=None)
@given(datasets)
def test_cgf1_stays_within_bounds(dataset):
    results = score_in_memory(dataset)
    for prefix in ("", "box_"):
        assert -100 <= results[prefix + "cgF1"] <= 100
        assert -1 <= results[prefix + "IL_MCC"] <= 1
        assert 0 <= results[prefix + "pmF1"] <= 1


@settings(max_examples=60, deadline=None)
@given(datasets, st.data())
def test_permuting_predictions_changes_nothing(dataset, data):
    count = sum(len(scored) for _, scored in dataset)
    order = data.draw(st.permutations(range(count)))
    assert score_in_memory(dataset, order=order) == score_in_memory(dataset)


@settings(max_examples=60, deadline=None)
@given(datasets, st.data())
def test_prediction_below_one_half_changes_nothing(dataset, data):
    target = data.draw(st.integers(0, len(dataset) - 1))
    low = prediction(target, rect(*data.draw(rectangles)), data.draw(st.floats(0, 0.5, exclude_max=True)))
    assert score_in_memory(dataset, extra=[low]) == score_in_memory(dataset)
