"""cgF1 and its parts, with the accounting of the official SA-Co scorer (paper §5 and appendix E.3).

A datapoint is an (image or video, noun phrase) pair. Predictions scoring below SCORE_THRESHOLD are dropped,
and so is crowd GT (pycocotools flags it `ignore` and the official scorer removes ignored GT). The rest are
matched one-to-one by Hungarian matching on IoU; at each threshold τ of IOU_THRESHOLDS a datapoint counts
TP = matched pairs with IoU >= τ, FP = #predictions - TP and FN = #GT - TP.

- pmF1 (positive micro F1): TP and FN summed over all datapoints, FP only over datapoints with GT, so FPs
  on negatives are penalised through IL_MCC alone.
- IL_MCC: Matthews correlation of "has GT" against "has a prediction" over all datapoints.
- cgF1 = 100 * pmF1 * IL_MCC, averaged over the 10 thresholds.

Precision, recall and F1 carry the official smoothing terms, so perfect predictions score slightly under 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # the exact floats of pycocotools' COCOeval iouThrs
SCORE_THRESHOLD = 0.5  # the calibration gate: predictions with score >= 0.5 count
F1_SMOOTHING = 1e-4  # added to the denominators of precision, recall and F1 by the official scorer
IL_SMOOTHING = 1e-6  # the same for the image-level metrics and MCC
_AT_50 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.5)))
_AT_75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
_COUNT_FIELDS = ("true_positives", "num_predictions", "num_ground_truth")


def matched_ious(ious: np.ndarray) -> np.ndarray:
    """IoUs [min(P, G)] of the one-to-one matching of predictions to GT with the largest total IoU."""
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return ious[rows, cols]


def count_true_positives(ious: np.ndarray) -> np.ndarray:
    """TP at each IoU threshold [T] for one datapoint, from its IoU matrix [P, G] (predictions x GT)."""
    matched = matched_ious(ious)
    return (matched[None, :] >= IOU_THRESHOLDS[:, None]).sum(axis=1)


@dataclass
class DatapointCounts:
    """Matching outcome of D datapoints (after the score gate and without crowd GT)."""

    true_positives: np.ndarray  # [D, T] int
    num_predictions: np.ndarray  # [D] int
    num_ground_truth: np.ndarray  # [D] int

    @classmethod
    def from_rows(cls, rows: list[tuple[np.ndarray, int, int]]) -> DatapointCounts:
        """Stack (true positives [T], #predictions, #GT) rows, one per datapoint."""
        thresholds = len(IOU_THRESHOLDS)
        true_positives = np.array([row[0] for row in rows], dtype=np.int64).reshape(len(rows), thresholds)
        num_predictions = np.array([row[1] for row in rows], dtype=np.int64)
        num_ground_truth = np.array([row[2] for row in rows], dtype=np.int64)
        return cls(true_positives, num_predictions, num_ground_truth)

    @property
    def false_positives(self) -> np.ndarray:
        return self.num_predictions[:, None] - self.true_positives

    @property
    def false_negatives(self) -> np.ndarray:
        return self.num_ground_truth[:, None] - self.true_positives

    @property
    def has_local_f1(self) -> np.ndarray:
        """[D] False for true negatives (no GT, no prediction), where the official scorer defines no F1."""
        return (self.num_ground_truth > 0) | (self.num_predictions > 0)

    def local_f1(self) -> np.ndarray:
        """Smoothed F1 of each datapoint at each threshold [D, T] (0 for true negatives)."""
        return _precision_recall_f1(self.true_positives, self.false_positives, self.false_negatives)[2]


def select_oracle(per_gt_set: list[DatapointCounts]) -> DatapointCounts:
    """Gold protocol: per datapoint keep the GT set that scores best (all sets describe the same datapoints).

    Sets are compared by mean local F1 over thresholds; a later set must be strictly better to win. A set in
    which the datapoint is a true negative has no local F1, counts as perfect and is always taken.
    """
    best = np.zeros(len(per_gt_set[0].num_predictions), dtype=np.int64)
    best_defined = per_gt_set[0].has_local_f1
    best_score = per_gt_set[0].local_f1().mean(axis=1)
    for index, counts in enumerate(per_gt_set[1:], start=1):
        defined = counts.has_local_f1
        score = counts.local_f1().mean(axis=1)
        take = np.where(best_defined & defined, score > best_score, ~defined)
        best[take] = index
        best_defined = np.where(take, defined, best_defined)
        best_score = np.where(take, score, best_score)
    datapoints = np.arange(len(best))
    return DatapointCounts(
        *(np.stack([getattr(c, name) for c in per_gt_set])[best, datapoints] for name in _COUNT_FIELDS)
    )


def summarize(counts: DatapointCounts) -> dict[str, float]:
    """cgF1 (0-100 scale), IL_MCC, pmF1 and the other official metrics (fractions) of a set of datapoints."""
    has_gt = counts.num_ground_truth > 0
    has_prediction = counts.num_predictions > 0
    tp = counts.true_positives.sum(axis=0)
    fn = counts.false_negatives.sum(axis=0)
    fp_on_positives = counts.false_positives[has_gt].sum(axis=0)
    fp_everywhere = counts.false_positives.sum(axis=0)
    pm_f1 = _precision_recall_f1(tp, fp_on_positives, fn)[2]
    precision, recall, f1 = _precision_recall_f1(tp, fp_everywhere, fn)
    image_level = _image_level_metrics(has_gt, has_prediction)
    mcc = image_level["IL_MCC"]
    return {
        "cgF1": 100 * float(np.mean(pm_f1 * mcc)),
        "cgF1@50": 100 * float(pm_f1[_AT_50] * mcc),
        "cgF1@75": 100 * float(pm_f1[_AT_75] * mcc),
        "IL_MCC": mcc,
        "pmF1": float(np.mean(pm_f1)),
        "pmF1@50": float(pm_f1[_AT_50]),
        "pmF1@75": float(pm_f1[_AT_75]),
        "positive_macro_F1": _positive_macro_f1(counts, has_gt & has_prediction),
        "precision": float(np.mean(precision)),
        "recall": float(np.mean(recall)),
        "F1": float(np.mean(f1)),
        **{key: value for key, value in image_level.items() if key != "IL_MCC"},
        "num_datapoints": len(has_gt),
        "num_positives": int(has_gt.sum()),
    }


def _precision_recall_f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, ...]:
    precision = tp / (tp + fp + F1_SMOOTHING)
    recall = tp / (tp + fn + F1_SMOOTHING)
    return precision, recall, 2 * precision * recall / (precision + recall + F1_SMOOTHING)


def _positive_macro_f1(counts: DatapointCounts, has_both: np.ndarray) -> float:
    """Mean local F1 over datapoints with GT and predictions; -1 when there are none (COCO's 'undefined')."""
    if not has_both.any():
        return -1.0
    return float(np.mean(counts.local_f1()[has_both].mean(axis=0)))


def _image_level_metrics(has_gt: np.ndarray, has_prediction: np.ndarray) -> dict[str, float]:
    tp = int(np.sum(has_gt & has_prediction))
    fn = int(np.sum(has_gt & ~has_prediction))
    fp = int(np.sum(~has_gt & has_prediction))
    tn = int(np.sum(~has_gt & ~has_prediction))
    recall = tp / (tp + fn + IL_SMOOTHING)
    precision = tp / (tp + fp + IL_SMOOTHING)
    mcc_denominator = np.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)) + IL_SMOOTHING
    return {
        "IL_MCC": float(tp * tn - fp * fn) / float(mcc_denominator),
        "IL_precision": precision,
        "IL_recall": recall,
        "IL_F1": 2 * precision * recall / (precision + recall + IL_SMOOTHING),
        "IL_FPR": fp / (fp + tn + IL_SMOOTHING),
        "IL_TP": tp,
        "IL_FP": fp,
        "IL_TN": tn,
        "IL_FN": fn,
    }
