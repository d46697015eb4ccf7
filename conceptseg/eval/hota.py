"""HOTA (Luiten et al., IJCV 2021) for single-class sequences, with the accounting of TrackEval's HOTA.

For each localisation threshold α of ALPHAS, the detections of each frame are matched by Hungarian matching
on similarity weighted by a global alignment score between the two track ids; matches with similarity >= α
are TPs. DetA = TP / (TP + FN + FP). AssA averages, over the TPs, the Jaccard overlap between the frames in
which the two matched tracks are matched and the frames in which either exists. HOTA = sqrt(DetA * AssA).
Sequences are combined by summing TP, FN and FP and averaging association scores weighted by TP; the
reported numbers are means over α.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

ALPHAS = np.arange(0.05, 0.99, 0.05)  # 19 thresholds, the same floats as TrackEval
_EPS = np.finfo(float).eps


@dataclass
class HotaSequence:
    """The detections of one sequence, frame by frame.

    Track ids run over 0..num_gt_ids-1 (and 0..num_pred_ids-1); every id must appear in some frame.
    """

    gt_ids: list[np.ndarray]  # per frame: [n_gt_t] ids of the GT tracks present
    pred_ids: list[np.ndarray]  # per frame: [n_pred_t] ids of the predicted tracks present
    similarity: list[np.ndarray]  # per frame: [n_gt_t, n_pred_t] IoU between them
    num_gt_ids: int
    num_pred_ids: int


@dataclass
class _Scores:
    """Per-α counts and association scores [A] of one sequence (or of several, combined)."""

    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    ass_a: np.ndarray
    ass_re: np.ndarray
    ass_pr: np.ndarray
    loc_a: np.ndarray


def hota(sequences: Iterable[HotaSequence]) -> dict[str, float]:
    """HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr and LocA over all sequences (fractions, means over α)."""
    scores = [_score_sequence(sequence) for sequence in sequences]
    tp = sum((s.tp for s in scores), np.zeros(len(ALPHAS)))
    fn = sum((s.fn for s in scores), np.zeros(len(ALPHAS)))
    fp = sum((s.fp for s in scores), np.zeros(len(ALPHAS)))

    def tp_weighted(field: str) -> np.ndarray:
        return sum((getattr(s, field) * s.tp for s in scores), np.zeros(len(ALPHAS))) / np.maximum(1.0, tp)

    ass_a = tp_weighted("ass_a")
    det_a = tp / np.maximum(1, tp + fn + fp)
    loc_weighted = sum((s.loc_a * s.tp for s in scores), np.zeros(len(ALPHAS)))
    per_alpha = {
        "HOTA": np.sqrt(det_a * ass_a),
        "DetA": det_a,
        "AssA": ass_a,
        "DetRe": tp / np.maximum(1, tp + fn),
        "DetPr": tp / np.maximum(1, tp + fp),
        "AssRe": tp_weighted("ass_re"),
        "AssPr": tp_weighted("ass_pr"),
        "LocA": np.maximum(1e-10, loc_weighted) / np.maximum(1e-10, tp),
    }
    return {name: float(np.mean(values)) for name, values in per_alpha.items()}


def _score_sequence(sequence: HotaSequence) -> _Scores:
    num_gt_dets = sum(len(ids) for ids in sequence.gt_ids)
    num_pred_dets = sum(len(ids) for ids in sequence.pred_ids)
    zeros = np.zeros(len(ALPHAS))
    if num_gt_dets == 0 or num_pred_dets == 0:
        return _Scores(zeros, zeros + num_gt_dets, zeros + num_pred_dets, zeros, zeros, zeros, zeros + 1)

    alignment, gt_count, pred_count = _global_alignment(sequence)
    tp, fn, fp, loc_sum = zeros.copy(), zeros.copy(), zeros.copy(), zeros.copy()
    matches = np.zeros((len(ALPHAS), sequence.num_gt_ids, sequence.num_pred_ids))
    for gt_ids, pred_ids, similarity in zip(sequence.gt_ids, sequence.pred_ids, sequence.similarity):
        if len(gt_ids) == 0 or len(pred_ids) == 0:
            fn += len(gt_ids)
            fp += len(pred_ids)
            continue
        rows, cols = linear_sum_assignment(alignment[np.ix_(gt_ids, pred_ids)] * similarity, maximize=True)
        matched_similarity = similarity[rows, cols]
        is_match = matched_similarity[None, :] >= ALPHAS[:, None] - _EPS  # [A, M]
        num_matches = is_match.sum(axis=1)
        tp += num_matches
        fn += len(gt_ids) - num_matches
        fp += len(pred_ids) - num_matches
        loc_sum += (is_match * matched_similarity[None, :]).sum(axis=1)
        alpha_index, match_index = np.nonzero(is_match)
        np.add.at(matches, (alpha_index, gt_ids[rows[match_index]], pred_ids[cols[match_index]]), 1)

    # every TP of a track pair scores that pair's overlap: sum over pairs of (matches * overlap) / TP
    share = matches / np.maximum(1, tp)[:, None, None]
    union = gt_count[:, None] + pred_count[None, :] - matches
    return _Scores(
        tp,
        fn,
        fp,
        ass_a=(share * matches / np.maximum(1, union)).sum(axis=(1, 2)),
        ass_re=(share * matches / np.maximum(1, gt_count)[:, None]).sum(axis=(1, 2)),
        ass_pr=(share * matches / np.maximum(1, pred_count)[None, :]).sum(axis=(1, 2)),
        loc_a=np.maximum(1e-10, loc_sum) / np.maximum(1e-10, tp),
    )


def _global_alignment(sequence: HotaSequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft track-to-track Jaccard score [G, P] used to break matching ties, plus per-track frame counts."""
    potential = np.zeros((sequence.num_gt_ids, sequence.num_pred_ids))
    gt_count = np.zeros(sequence.num_gt_ids)
    pred_count = np.zeros(sequence.num_pred_ids)
    for gt_ids, pred_ids, similarity in zip(sequence.gt_ids, sequence.pred_ids, sequence.similarity):
        # each detection's similarity is shared out among everything it overlaps in this frame
        denominator = similarity.sum(axis=0)[None, :] + similarity.sum(axis=1)[:, None] - similarity
        shared = np.zeros_like(similarity)
        positive = denominator > _EPS
        shared[positive] = similarity[positive] / denominator[positive]
        potential[np.ix_(gt_ids, pred_ids)] += shared
        gt_count[gt_ids] += 1
        pred_count[pred_ids] += 1
    return potential / (gt_count[:, None] + pred_count[None, :] - potential), gt_count, pred_count


def identity_switches(sequence: HotaSequence, threshold: float = 0.5) -> int:
    """CLEAR MOT identity switches: per frame, GT and predicted detections are matched one-to-one (Hungarian
    on IoU, pairs with IoU >= `threshold` only); a GT track counts a switch each time it is matched to a
    different predicted track than at its previous match (frames where it is unmatched are skipped)."""
    last_match: dict[int, int] = {}  # GT track id -> predicted id it was last matched to
    switches = 0
    for gt_ids, pred_ids, similarity in zip(sequence.gt_ids, sequence.pred_ids, sequence.similarity):
        if len(gt_ids) == 0 or len(pred_ids) == 0:
            continue
        for row, col in zip(*linear_sum_assignment(similarity, maximize=True)):
            if similarity[row, col] < threshold:
                continue
            gt_id, pred_id = int(gt_ids[row]), int(pred_ids[col])
            switches += last_match.get(gt_id, pred_id) != pred_id
            last_match[gt_id] = pred_id
    return switches
