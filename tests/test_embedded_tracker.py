"""The embedded model's trained tracker through the public API: a click segments a concept-world object, a
negative click takes back a wrongly included region, and a clicked object is followed in video."""

import numpy as np
import pytest
from scipy import ndimage

from conceptseg import load_model
from conceptseg.data import ConceptWorld
from conceptseg.predict.image import ImagePredictor
from conceptseg.predict.video import VideoPredictor
from conceptseg.train.tracker_data import centre_click


@pytest.fixture(scope="module")
def predictor():
    return ImagePredictor(load_model())


def coverage(mask: np.ndarray, region: np.ndarray) -> float:
    return float((mask & region).sum() / region.sum())


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def large_objects(sample, count: int) -> list[int]:
    return [index for index, mask in enumerate(sample.instance_masks) if mask.sum() > 300][:count]


def test_a_centre_click_segments_the_clicked_object(predictor):
    world = ConceptWorld(size=224, split="test", seed=21)
    ious = []
    for sample in map(world.sample, range(20)):
        predictor.set_image(sample.image)
        for index in large_objects(sample, 2):
            target = sample.instance_masks[index]
            result = predictor.predict_instance(points=[centre_click(target)], point_labels=[1])
            ious.append(iou(result.masks[0], target))
    assert np.mean(ious) > 0.6 and np.median(ious) > 0.7


def test_a_negative_click_takes_back_a_wrongly_included_region(predictor):
    """Where a centre click's mask spills over its object, a negative click at the centre of the largest
    spilled region lowers that region's coverage, and the object stays."""
    world = ConceptWorld(size=224, split="test", seed=21)
    before, after, kept = [], [], []
    for sample in map(world.sample, range(40)):
        predictor.set_image(sample.image)
        for index in large_objects(sample, 4):
            target = sample.instance_masks[index]
            click = centre_click(target)
            first = predictor.predict_instance(points=[click], point_labels=[1]).masks[0]
            labels, count = ndimage.label(first & ~target)
            if count == 0:
                continue
            region = labels == 1 + np.argmax(ndimage.sum(labels > 0, labels, range(1, count + 1)))
            if region.sum() < 30:
                continue
            refined = predictor.predict_instance(points=[click, centre_click(region)], point_labels=[1, 0],
                                                 multimask=False).masks[0]
            before.append(coverage(first, region))
            after.append(coverage(refined, region))
            kept.append(coverage(refined, target))
    assert len(before) >= 10
    assert np.mean(after) < np.mean(before) - 0.15 and np.mean(np.less(after, before)) > 0.5
    assert np.mean(kept) > 0.75


def test_a_clicked_object_is_followed_through_a_clip():
    world = ConceptWorld(size=224, split="test", seed=22)
    predictor = VideoPredictor(load_model())
    ious = []
    for clip in (world.video(index, num_frames=10) for index in range(4)):
        masks = clip.instance_masks  # [M, T, H, W]
        track = int(np.argmax(masks[:, 0].sum(axis=(1, 2))))  # the largest object on frame 0
        with predictor.start(list(clip.frames)) as session:
            session.add_prompt(0, obj_id=1, points=[centre_click(masks[track, 0])], point_labels=[1])
            for frame in session.propagate():
                target = masks[track, frame.frame_index]
                if frame.frame_index and target.any():
                    ids = frame.object_ids.tolist()
                    shown = frame.masks[ids.index(1)] if 1 in ids else np.zeros_like(target)
                    ious.append(iou(shown, target))
    assert np.mean(ious) > 0.6
