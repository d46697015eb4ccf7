"""The video session API on tiny random weights: prompts on any frame, refinement, removal, both directions,
streams, bad input, and state that stays bounded however long the video."""

import dataclasses
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from hf_reference import randomize_

from conceptseg import SAM3, tiny_config
from conceptseg.io.video import FrameSkippedWarning
from conceptseg.predict.video import VideoPredictor
from conceptseg.predict.video_settings import VideoSettings

NUM_FRAMES = 12
SIZE = (90, 120)


@pytest.fixture(scope="module")
def model():
    # object pointers are split into 64-d memory tokens: the tracker needs a width of at least 64
    return randomize_(SAM3(dataclasses.replace(tiny_config(), d_model=64)), seed=5).eval()


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(NUM_FRAMES)]


def predictor(model, **settings) -> VideoPredictor:
    return VideoPredictor(model, VideoSettings(**{"hotstart_delay": 0, **settings}))


def test_a_clicked_object_is_tracked_from_its_frame_on_and_removal_stops_it(model, frames):
    with predictor(model).start(frames) as session:
        prompted = session.add_prompt(5, points=[[60, 45]], obj_id=3)
        assert prompted.frame_index == 5
        session.add_prompt(1, points=[[20, 20]], point_labels=[1], obj_id=8)
        assert session.object_ids == [3, 8]
        for result in session.propagate(max_frames=8):
            tracked = {obj_id for obj_id, track in session.step.objects.items()
                       if track.bank.get(result.frame_index) is not None}
            # both kept although added on different frames; 3 gone once removed
            assert tracked == ({3, 8} if 5 <= result.frame_index <= 6 else {8})
            assert set(result.object_ids) <= tracked
            if result.frame_index == 6:
                session.remove_object(3)
        assert session.object_ids == [8]
        later = list(session.propagate(start=7))
        assert all(3 not in result.object_ids for result in later)
        assert [result.frame_index for result in later] == list(range(7, NUM_FRAMES))
        with pytest.raises(ValueError, match="unknown obj_id 3"):
            session.remove_object(3)


def test_both_directions_in_one_call_keep_the_ids(model, frames):
    with predictor(model).start(frames) as session:
        session.add_prompt(6, points=[[50, 40], [70, 60]], point_labels=[1, 0], obj_id=1)
        indices = [result.frame_index for result in session.propagate(direction="both")]
        assert indices == list(range(6, NUM_FRAMES)) + list(range(5, -1, -1))
        track = session.step.objects[1]
        assert track.bank.get(0) is not None and track.bank.get(6).is_conditioning


def test_a_stream_keeps_its_frame_numbers_for_prompts_given_while_it_runs(model, frames):
    with predictor(model).start(iter(frames)) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        seen = []
        for result in session.propagate():
            seen.append(result.frame_index)
            if result.frame_index == 3:
                session.add_prompt(4, points=[[90, 70]], obj_id=2)  # the next frame of the stream
        assert seen == list(range(NUM_FRAMES))
        assert session.step.objects[2].first_frame == 4 and session.step.objects[2].bank.get(4).is_conditioning
        with pytest.raises(ValueError, match="stream cannot go back"):
            list(session.propagate(direction="backward", start=5))


def test_concepts_find_and_tag_objects(model, frames):
    settings = {"detection_threshold": 0.0, "new_object_score": 0.0, "nms_iou_threshold": 0.0}
    with predictor(model, **settings).start(frames) as session:
        session.add_prompt(0, text="red circle")
        results = list(session.propagate(max_frames=3))
        assert [r.frame_index for r in results] == [0, 1, 2]
        assert all(label == "red circle" for r in results for label in r.labels)
        born = {obj_id: t for obj_id, t in session.step.objects.items() if t.prompt_id == 1}
        assert born and all(t.label == "red circle" and 0 <= t.score <= 1 for t in born.values())
        for r in results:
            assert r.masks.shape[1:] == SIZE and len(r.masks) == len(r.boxes) == len(r.scores) == len(r.object_ids)


def test_bad_prompts_are_clear_errors(model, frames):
    with predictor(model).start(frames) as session:
        with pytest.raises(ValueError, match="frame 12 is outside the video"):
            session.add_prompt(12, points=[[1, 1]], obj_id=1)
        with pytest.raises(ValueError, match="outside the 120x90 image"):
            session.add_prompt(0, points=[[500, 1]], obj_id=1)
        with pytest.raises(ValueError, match="no area inside"):
            session.add_prompt(0, boxes=[[200, 200, 300, 300]], obj_id=1)
        with pytest.raises(ValueError, match="give an obj_id"):
            session.add_prompt(0, points=[[1, 1]])
        with pytest.raises(ValueError, match="nothing to track"):
            list(session.propagate())
        with pytest.raises(ValueError, match="direction"):
            list(session.propagate(direction="sideways"))
    with pytest.raises(ValueError, match="closed"):
        session.add_prompt(0, text="star")


def test_a_corrupt_frame_is_skipped_and_the_others_keep_their_index(model, frames, tmp_path):
    for index, frame in enumerate(frames[:6]):
        PIL.Image.fromarray(frame).save(tmp_path / f"{index:03d}.png")
    (tmp_path / "003.png").write_bytes(b"\x89PNG broken")
    with predictor(model).start(tmp_path) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            indices = [result.frame_index for result in session.propagate()]
        assert indices == [0, 1, 2, 4, 5]
        assert any(issubclass(w.category, FrameSkippedWarning) and "003.png" in str(w.message) for w in caught)


def test_frames_changing_size_stop_with_a_clear_error_after_the_good_ones(model, frames):
    mixed = frames[:4] + [np.zeros((50, 60, 3), np.uint8)]
    with predictor(model).start(iter(mixed)) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        done = []
        with pytest.raises(ValueError, match="frame 4 is 60x50 but the first frame is 120x90"):
            for result in session.propagate():
                done.append(result.frame_index)
        assert done == [0, 1, 2, 3]


def test_state_stays_bounded_over_a_long_video(model):
    rng = np.random.default_rng(1)
    stream = (rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(60))
    with predictor(model, hotstart_delay=4, hotstart_unmatched_frames=2,
                   hotstart_duplicate_frames=2).start(stream) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        sizes = []
        for result in session.propagate():
            bank = session.step.objects[1].bank
            features = sum(m.features is not None for m in bank.memories())
            sizes.append((len(bank), features))
        assert result.frame_index == 59
        assert max(sizes[20:]) == sizes[-1] and sizes[20] == sizes[-1]  # constant once the window is full
        num_maskmem = model.config.tracker.num_maskmem
        assert sizes[-1][1] <= num_maskmem and sizes[-1][0] <= model.config.tracker.max_obj_ptrs_in_encoder + 1


def test_video_needs_tracker_weights(model):
    no_tracker = SAM3(model.config)
    no_tracker.missing_components = ("tracker",)
    with pytest.raises(ValueError, match="no tracker weights"):
        VideoPredictor(no_tracker)


def test_results_are_those_of_a_frame_and_torch_state_is_untouched(model, frames):
    grad = torch.is_grad_enabled()
    with predictor(model).start(frames) as session:
        session.add_prompt(2, points=[[40, 40]], obj_id=4)
        (result,) = list(session.propagate(start=2, max_frames=1))
    assert torch.is_grad_enabled() == grad
    assert result.frame_index == 2 and result.image_size == SIZE
    assert result.masks.dtype == bool and result.boxes.dtype == np.float32


def test_reconditioning_keeps_only_the_most_recent_detection_prompts(model, frames):
    with predictor(model).start(frames) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        step, track = session.step, session.step.objects[1]
        levels = model.tracker_features(step._trunk(frames[0]))
        side = model.config.mask_size
        detection = torch.full((side, side), -5.0)
        detection[4:20, 4:20] = 5.0
        for frame in range(16, 16 * 8, 16):
            step._recondition(levels, frame, track, detection)
        kept = model.config.tracker.max_cond_frames_in_attn
        assert track.bank.conditioning_frames == [0, *range(16 * (8 - kept), 16 * 8, 16)]
        assert track.bank.get(112).is_conditioning


def test_small_floating_fragments_are_dropped_and_boxes_follow_the_cleaned_masks(model, frames):
    with predictor(model, min_component_area=20).start(frames) as session:
        session.add_prompt(0, points=[[30, 30]], obj_id=1)
        step, track = session.step, session.step.objects[1]
        logits = torch.full((1, 24, 32), -5.0)
        logits[0, 4:12, 4:12] = 5.0  # the object
        logits[0, 20, 30] = 5.0  # a one-cell fragment far away
        results = step._results(0, SIZE, [track], logits, torch.ones(1))
        x1, y1, x2, y2 = results.boxes[0]
        assert x2 < 60 and y2 < 50  # the fragment near the far corner would stretch the box to it
        assert not results.masks[0, 80:, 110:].any()
