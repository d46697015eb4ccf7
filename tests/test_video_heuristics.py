"""Hand-drawn cases for the video loop's heuristics and settings: exact expected outputs."""

import dataclasses

import numpy as np
import pytest
import torch

from conceptseg.model.box_ops import masks_to_boxes
from conceptseg.predict.video_heuristics import (
    ALWAYS_OCCLUDED,
    NEVER_OCCLUDED,
    associate,
    fill_holes_and_remove_sprinkles,
    mask_iou,
    mask_nms,
    non_overlapping,
    non_overlapping_by_object_score,
    remove_small_components,
    shrinks_under_non_overlap,
    suppress_overlaps_by_recent_occlusion,
    suppress_shrunk_masks,
    update_last_occluded,
)
from conceptseg.predict.video_settings import VideoSettings
from conceptseg.predict.video_state import ShownObjects


def draw(size: int, *boxes: tuple[int, int, int, int]) -> np.ndarray:
    """A bool [size, size] mask with each (top, left, bottom, right) block (inclusive) set."""
    mask = np.zeros((size, size), dtype=bool)
    for top, left, bottom, right in boxes:
        mask[top:bottom + 1, left:right + 1] = True
    return mask


def masks(*drawn: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack(drawn))


def logits(mask: np.ndarray) -> torch.Tensor:
    """+2 inside, -2 outside, as a float [1, h, w] batch."""
    return torch.from_numpy(np.where(mask, 2.0, -2.0)).float()[None]


# --- IoU and NMS ------------------------------------------------------------------------------------------------


def test_mask_iou_of_two_overlapping_squares_with_logits_or_bools():
    squares = masks(draw(8, (0, 0, 3, 3)), draw(8, (2, 2, 5, 5)), np.zeros((8, 8), bool))
    expected = torch.tensor([[1.0, 4 / 28, 0.0], [4 / 28, 1.0, 0.0], [0.0, 0.0, 0.0]])  # empty vs empty: 0
    assert torch.equal(mask_iou(squares, squares), expected)
    as_logits = torch.where(squares, 3.0, -1.0)
    assert torch.equal(mask_iou(as_logits, squares), expected)
    with pytest.raises(ValueError, match="one size"):
        mask_iou(squares, squares[:, :4])


def test_mask_nms_keeps_the_best_and_returns_indices_in_input_order():
    square, shifted, far = draw(8, (0, 0, 3, 3)), draw(8, (2, 2, 5, 5)), draw(8, (6, 6, 7, 7))
    detections = masks(far, shifted, square)
    scores = torch.tensor([0.6, 0.8, 0.9])
    assert mask_nms(detections, scores, 0.1).tolist() == [0, 2]  # IoU 1/7 > 0.1: the 0.8 one goes
    assert mask_nms(detections, scores, 0.2).tolist() == [0, 1, 2]
    assert mask_nms(detections, scores, 0.0).tolist() == [0, 1, 2]  # 0 = off
    assert mask_nms(detections[:0], scores[:0], 0.1).tolist() == []


def test_mask_nms_ties_go_to_the_lower_index_and_iou_at_the_threshold_survives():
    left, same, other = draw(8, (0, 0, 1, 3)), draw(8, (0, 0, 1, 3)), draw(8, (6, 0, 7, 3))
    assert mask_nms(masks(other, left, same), torch.tensor([0.6, 0.8, 0.8]), 0.1).tolist() == [0, 1]
    half = draw(8, (0, 0, 1, 1))  # IoU with `left` is exactly 0.5
    assert mask_nms(masks(left, half), torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert mask_nms(masks(left, half), torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]


# --- holes, sprinkles, fragments --------------------------------------------------------------------------------


def test_a_three_pixel_hole_is_filled_with_logit_0_1():
    ring = draw(12, (2, 2, 8, 8))
    ring[5, 4:7] = False  # the hole: 3 pixels
    mask = logits(ring)
    expected = mask.clone()
    expected[0, 5, 4:7] = 0.1
    assert torch.equal(fill_holes_and_remove_sprinkles(mask, 3), expected)
    assert torch.equal(fill_holes_and_remove_sprinkles(mask, 2), mask)  # 3 > 2: kept
    assert fill_holes_and_remove_sprinkles(mask, 0) is mask  # 0 = off


def test_holes_are_eight_connected_include_border_pieces_and_logit_zero_is_background():
    solid = draw(8, (0, 0, 7, 7))
    solid[3, 3] = solid[4, 4] = False  # diagonal neighbours: one 2-pixel hole
    solid[0, 6:8] = False  # a background piece on the border
    mask = logits(solid)
    mask[0, 7, 0] = 0.0  # a logit of exactly 0 is background too
    filled = fill_holes_and_remove_sprinkles(mask, 1)
    assert filled[0, 3, 3] == -2 and filled[0, 4, 4] == -2  # area 2 > 1 with 8-connectivity
    assert filled[0, 7, 0] == pytest.approx(0.1)
    filled = fill_holes_and_remove_sprinkles(mask, 2)
    assert torch.equal(filled > 0, torch.ones(1, 8, 8, dtype=torch.bool))  # border piece filled as well


def test_a_two_pixel_sprinkle_far_away_is_removed_with_logit_minus_0_1():
    drawing = draw(16, (1, 1, 6, 6), (13, 13, 13, 14))  # a 36-pixel object, a 2-pixel sprinkle
    mask = logits(drawing)
    expected = mask.clone()
    expected[0, 13, 13:15] = -0.1
    assert torch.equal(fill_holes_and_remove_sprinkles(mask, 16), expected)
    diagonal = draw(16, (1, 1, 6, 6), (12, 12, 12, 12), (13, 13, 13, 13))  # 8-connected: one 2-pixel piece
    assert torch.equal(fill_holes_and_remove_sprinkles(logits(diagonal), 1), logits(diagonal))


def test_holes_are_filled_before_sprinkles_are_measured():
    drawing = draw(16, (0, 0, 5, 5), (10, 10, 12, 12))  # 36-pixel object + a 3x3 ring (8 px) with a hole
    drawing[11, 11] = False
    result = fill_holes_and_remove_sprinkles(logits(drawing), 8)
    assert result[0, 11, 11] == pytest.approx(0.1)  # the ring became a 9-pixel piece: 9 > 8, kept
    assert bool((result[0, 10:13, 10:13] > 0).all())


def test_sprinkles_must_also_be_at_most_half_the_mask_and_equal_pieces_can_empty_it():
    single = logits(draw(12, (0, 0, 1, 1)))  # a 4-pixel object alone: 4 > 4 // 2, never removed
    assert torch.equal(fill_holes_and_remove_sprinkles(single, 16), single)
    two_pieces = logits(draw(12, (0, 0, 0, 4), (8, 0, 8, 4)))  # 5 + 5 pixels: limit min(16, 5) = 5
    result = fill_holes_and_remove_sprinkles(two_pieces, 16)
    assert not bool((result > 0).any())  # as in the release: both go
    assert result[0, 0, 0] == pytest.approx(-0.1)


def test_fill_holes_works_per_mask_in_a_batch():
    ring = draw(8, (1, 1, 5, 5))
    ring[3, 3] = False
    batch = torch.cat([logits(ring), logits(draw(8, (1, 1, 5, 5)))])
    result = fill_holes_and_remove_sprinkles(batch, 4)
    assert torch.equal(result > 0, torch.from_numpy(np.stack([draw(8, (1, 1, 5, 5))] * 2)))


def test_remove_small_components_drops_fragments_and_boxes_shrink():
    with_fragment = draw(16, (2, 2, 4, 4), (14, 14, 14, 15))  # 9-pixel body, 2-pixel fragment
    cleaned = remove_small_components(masks(with_fragment), 3)
    assert torch.equal(cleaned, masks(draw(16, (2, 2, 4, 4))))
    assert masks_to_boxes(masks(with_fragment)).tolist() == [[2.0, 2.0, 15.0, 14.0]]
    assert masks_to_boxes(cleaned).tolist() == [[2.0, 2.0, 4.0, 4.0]]
    assert torch.equal(remove_small_components(masks(with_fragment), 0), masks(with_fragment))


def test_remove_small_components_always_keeps_the_largest_piece():
    small = masks(draw(8, (0, 0, 0, 1), (5, 5, 5, 5)), draw(8, (0, 0, 0, 1), (5, 5, 5, 6)))
    kept = remove_small_components(small, 5)
    assert torch.equal(kept[0], torch.from_numpy(draw(8, (0, 0, 0, 1))))  # 2 px kept, 1 px gone
    assert torch.equal(kept[1], small[1])  # two 2-pixel pieces tie: both kept


# --- association --------------------------------------------------------------------------------------------------


def scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    tracks = masks(draw(16, (0, 0, 3, 3)), draw(16, (0, 4, 3, 7)), np.zeros((16, 16), bool),
                   draw(16, (12, 12, 15, 15)))
    detections = masks(draw(16, (0, 0, 3, 7)),  # covers tracks 0 and 1: IoU 0.5 with each
                       draw(16, (8, 0, 9, 3)),  # nothing there, confident: new
                       draw(16, (8, 8, 9, 11)),  # nothing there, not confident enough
                       draw(16, (12, 12, 13, 13)))  # IoU 0.25 with track 3
    return detections, torch.tensor([0.9, 0.75, 0.6, 0.95]), tracks


def test_associate_one_detection_matching_two_tracks_and_an_empty_track_not_counted():
    detections, scores, tracks = scene()
    result = associate(detections, scores, torch.where(tracks, 1.0, -1.0), VideoSettings())
    assert result.new_detections == [1]
    assert result.unmatched_tracks == [3]  # IoU 0.25 < 0.5; track 2 is empty, not unmatched
    assert result.empty_tracks == [2]
    assert result.detection_to_tracks == [[0, 1], [], [], [3]]
    assert result.best_detection_per_track.tolist() == [0, 0, -1, 3]
    assert result.confident_detection_per_track == {}  # best IoUs 0.5 and 0.25 < 0.8
    assert result.ious[0].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_associate_records_reconditioning_detections_the_later_one_winning():
    track = masks(draw(8, (0, 0, 3, 3)), draw(8, (6, 6, 7, 7)))
    detections = masks(draw(8, (0, 0, 3, 3)), draw(8, (0, 0, 3, 3)), draw(8, (6, 6, 7, 7)))
    result = associate(detections, torch.tensor([0.9, 0.85, 0.79]), track, VideoSettings())
    assert result.confident_detection_per_track == {0: 1}  # detection 2 scores 0.79 < 0.8
    assert result.new_detections == []
    assert result.best_detection_per_track.tolist() == [0, 2]  # equal IoUs: the lower index


def test_associate_without_tracks_makes_every_detection_new_and_without_detections_every_track_unmatched():
    detections, scores, tracks = scene()
    no_tracks = associate(detections, torch.tensor([0.55, 0.6, 0.9, 0.51]), tracks[:0], VideoSettings())
    assert no_tracks.new_detections == [0, 1, 2, 3]  # the release's early exit: no score test
    assert no_tracks.detection_to_tracks == [[], [], [], []]
    no_detections = associate(detections[:0], scores[:0], tracks, VideoSettings())
    assert no_detections.new_detections == []
    assert no_detections.unmatched_tracks == [0, 1, 3]
    assert no_detections.empty_tracks == [2]
    assert no_detections.best_detection_per_track.tolist() == [-1, -1, -1, -1]


def test_associate_never_matches_across_concept_prompts_nor_objects_added_by_hand():
    detections, scores, tracks = scene()
    result = associate(detections, scores, tracks, VideoSettings(), detection_groups=[1, 0, 0, 0],
                       track_groups=[0, None, 0, 0])
    assert result.new_detections == [0, 1]  # detection 0 is of concept 1; track 1 was added by hand
    assert result.unmatched_tracks == [0, 1, 3]
    assert result.detection_to_tracks[0] == []
    assert result.unmatched_track_ids([10, 11, 12, 13]) == [10, 11, 13]


def test_association_maps_indices_to_object_ids():
    detections, scores, tracks = scene()
    result = associate(detections, scores, tracks, VideoSettings())
    assert result.tracks_per_detection([10, 11, 12, 13]) == [[10, 11], [], [], [13]]
    assert result.unmatched_track_ids([10, 11, 12, 13]) == [13]


# --- overlap suppression ------------------------------------------------------------------------------------------


def overlapping_pairs() -> torch.Tensor:
    a, b = draw(8, (0, 0, 3, 3)), draw(8, (4, 4, 7, 7))
    return masks(a, a, b, b)  # objects 0 and 1 overlap fully, so do 2 and 3


def test_the_most_recently_occluded_of_an_overlapping_pair_is_suppressed():
    suppress = suppress_overlaps_by_recent_occlusion(overlapping_pairs(), torch.tensor([5, 9, 3, 3]), 0.7)
    assert suppress.tolist() == [False, True, False, False]  # equal frames (3, 3): nobody


def test_a_never_occluded_partner_suppresses_nobody_forward_but_does_backward():
    last = torch.tensor([NEVER_OCCLUDED, 7, 5, 9])
    assert suppress_overlaps_by_recent_occlusion(overlapping_pairs(), last, 0.7).tolist() == [
        False, False, False, True]
    assert suppress_overlaps_by_recent_occlusion(overlapping_pairs(), last, 0.7, reverse=True).tolist() == [
        True, False, True, False]


def test_overlap_suppression_off_below_threshold_or_across_prompts():
    last = torch.tensor([5, 9, 3, ALWAYS_OCCLUDED])
    pairs = overlapping_pairs()
    assert suppress_overlaps_by_recent_occlusion(pairs, last, 0.7).tolist() == [False, True, False, True]
    assert not suppress_overlaps_by_recent_occlusion(pairs, last, 0.0).any()  # 0 = off
    apart = suppress_overlaps_by_recent_occlusion(pairs, last, 0.7, groups=[0, 1, 0, 1])
    assert not apart.any()
    partial = masks(draw(8, (0, 0, 3, 3)), draw(8, (0, 0, 3, 2)))  # IoU 0.75
    assert suppress_overlaps_by_recent_occlusion(partial, torch.tensor([1, 2]), 0.75).tolist() == [False, True]
    assert not suppress_overlaps_by_recent_occlusion(partial, torch.tensor([1, 2]), 0.76).any()


def test_update_last_occluded_marks_empty_and_suppressed_objects():
    tracks = masks(draw(8, (0, 0, 1, 1)), np.zeros((8, 8), bool), draw(8, (4, 4, 5, 5)))
    updated = update_last_occluded(tracks, torch.tensor([NEVER_OCCLUDED, 3, 4]),
                                   torch.tensor([False, False, True]), frame_index=12)
    assert updated.tolist() == [NEVER_OCCLUDED, 12, 12]


# --- non-overlap --------------------------------------------------------------------------------------------------


def test_non_overlapping_gives_each_pixel_to_the_highest_score_and_ties_to_the_lower_index():
    scores = torch.tensor([[[3.0, 1.0, -4.0, 2.0]], [[1.0, 2.0, -12.0, 2.0]]])
    expected = torch.tensor([[[3.0, -10.0, -4.0, 2.0]], [[-10.0, 2.0, -12.0, -10.0]]])
    assert torch.equal(non_overlapping(scores), expected)
    assert torch.equal(non_overlapping(scores[:1]), scores[:1])


def test_output_non_overlap_goes_by_object_score():
    a, b = draw(4, (0, 0, 1, 2)), draw(4, (0, 1, 1, 3))
    result = non_overlapping_by_object_score(masks(a, b), torch.tensor([0.6, 0.9]))
    assert torch.equal(result, masks(draw(4, (0, 0, 1, 0)), b))
    tied = non_overlapping_by_object_score(masks(a, b), torch.tensor([0.7, 0.7]))
    assert torch.equal(tied, masks(a, draw(4, (0, 3, 1, 3))))
    zero = non_overlapping_by_object_score(masks(a, b), torch.tensor([0.0, 0.9]))
    assert not zero[0].any()


def test_memory_test_flags_masks_that_would_keep_under_30_percent():
    a = torch.where(torch.from_numpy(draw(4, (0, 0, 1, 3))), 1.0, -1.0)  # 8 pixels
    b = torch.where(torch.from_numpy(draw(4, (0, 0, 1, 2))), 5.0, -1.0)  # takes 6 of them
    assert shrinks_under_non_overlap(torch.stack([a, b]), 0.3).tolist() == [True, False]  # 2 / 8 < 0.3
    c = torch.where(torch.from_numpy(draw(4, (0, 0, 1, 1))), 5.0, -1.0)  # takes 4 of a's 8: 0.5 kept
    assert shrinks_under_non_overlap(torch.stack([a, c]), 0.5).tolist() == [False, False]  # at the bound: kept
    assert shrinks_under_non_overlap(torch.stack([a, c]), 0.51).tolist() == [True, False]
    empty = torch.full((4, 4), -3.0)
    assert shrinks_under_non_overlap(torch.stack([a, empty]), 0.3).tolist() == [False, True]
    assert shrinks_under_non_overlap(a[None], 0.3).tolist() == [False]
    apart = shrinks_under_non_overlap(torch.stack([a, b]), 0.3, groups=["car", "bus"])
    assert apart.tolist() == [False, False]


def test_suppress_shrunk_masks_clamps_only_the_flagged_masks():
    a = torch.tensor([[[1.0, 1.0, 1.0, 1.0]]])
    b = torch.tensor([[[5.0, 5.0, 5.0, -20.0]]])  # takes 3 of a's 4 pixels: a keeps 0.25 < 0.3
    result = suppress_shrunk_masks(torch.cat([a, b]), 0.3)
    assert torch.equal(result, torch.tensor([[[-10.0, -10.0, -10.0, -10.0]], [[5.0, 5.0, 5.0, -20.0]]]))
    assert torch.equal(suppress_shrunk_masks(torch.cat([a, b]), 0.25), torch.cat([a, b]))


# --- settings -----------------------------------------------------------------------------------------------------


def test_settings_defaults_are_the_release():
    settings = VideoSettings()
    assert (settings.detection_threshold, settings.nms_iou_threshold, settings.new_object_score,
            settings.association_iou, settings.track_unmatched_iou) == (0.5, 0.1, 0.7, 0.1, 0.5)
    assert (settings.hotstart_delay, settings.hotstart_unmatched_frames, settings.hotstart_duplicate_frames) == (
        15, 8, 8)
    assert (settings.recondition_every, settings.recondition_detection_score, settings.recondition_iou,
            settings.recondition_tracker_logit, settings.recondition_with_detection_mask) == (16, 0.8, 0.8, 0.8, True)
    assert (settings.overlap_iou_threshold, settings.memory_keep_fraction, settings.fill_hole_area) == (
        0.7, 0.3, 16)
    assert (settings.min_component_area, settings.max_objects) == (0, 64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.hotstart_delay = 0


def test_settings_reject_hotstart_thresholds_above_the_delay():
    with pytest.raises(ValueError, match="hotstart_unmatched_frames must be between 1 and hotstart_delay \\(5\\)"):
        VideoSettings(hotstart_delay=5)
    with pytest.raises(ValueError, match="hotstart_duplicate_frames"):
        VideoSettings(hotstart_duplicate_frames=16)
    with pytest.raises(ValueError, match="between 1 and"):
        VideoSettings(hotstart_unmatched_frames=0)
    no_heuristics = VideoSettings(hotstart_delay=0, hotstart_unmatched_frames=0, hotstart_duplicate_frames=0,
                                  recondition_every=0)  # the release's "no temporal disambiguation" variant
    assert not no_heuristics.reconditions_on(0)


@pytest.mark.parametrize("field, value, error", [
    ("nms_iou_threshold", 1.5, ValueError), ("association_iou", -0.1, ValueError),
    ("memory_keep_fraction", 2.0, ValueError), ("fill_hole_area", -1, ValueError),
    ("max_objects", 0, ValueError), ("recondition_every", -16, ValueError),
    ("recondition_tracker_logit", float("nan"), ValueError), ("hotstart_delay", True, TypeError),
    ("fill_hole_area", 16.0, TypeError), ("new_object_score", "0.7", TypeError),
    ("recondition_with_detection_mask", 1, TypeError),
])
def test_settings_validate_each_field(field, value, error):
    with pytest.raises(error, match=field):
        VideoSettings(**{field: value})


def test_settings_accept_overrides_and_know_the_reconditioning_frames():
    settings = dataclasses.replace(VideoSettings(), recondition_tracker_logit=-2, new_object_score=1)
    assert settings.new_object_score == 1
    assert [frame for frame in range(40) if settings.reconditions_on(frame)] == [0, 16, 32]


@pytest.mark.parametrize("overlapping", [False, True])
def test_results_keep_their_frame_when_removed_objects_are_taken_out(overlapping):
    """A result released after hot-start removals still carries its frame (overlays draw on it), whether the
    removal re-runs the non-overlap (objects of one prompt overlapped) or just drops the object."""
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 1:5, 1:5] = True
    masks[1, 3:7, 3:7] = True
    if not overlapping:
        masks[1, 3:5, 3:5] = False
    shown = ShownObjects(frame_index=4, size=(8, 8), object_ids=[1, 2], labels=["a", "a"], scores=[0.9, 0.8],
                         groups=["a", "a"], masks=masks, object_scores=torch.tensor([0.9, 0.8]))
    results = shown.results()
    assert (results.shown is not None) == overlapping
    results.image = np.full((8, 8, 3), 7, dtype=np.uint8)
    kept = results.without({2})
    assert kept.object_ids.tolist() == [1] and kept.image is results.image
    assert kept.masks[0].sum() == 16  # the pixels object 2 won go back to object 1
