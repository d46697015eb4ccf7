"""conceptseg.io video formats: lazy frame sources, overlay videos, YT-VIS results, atomic writes."""

import json
import sys
import warnings

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as mask_utils

from conceptseg.io.atomic import write_json_atomic, write_text_atomic
from conceptseg.io.images import ImageLimits
from conceptseg.io.overlay import (
    VideoWriter,
    default_codec,
    draw_tracks,
    instance_colour,
    write_overlay_video,
)
from conceptseg.io.rle import decode_mask
from conceptseg.io.saco_video import VideoPair, read_video_predictions
from conceptseg.io.video import FrameSkippedWarning, open_frames, require_av
from conceptseg.io.ytvis import YtvisWriter, write_frame_masks_png

av = pytest.importorskip("av")
HEIGHT, WIDTH = 48, 64


def frame_at(index: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Frame `index` of the test videos: grey level 20 * index, and a white band index + 1 columns wide."""
    frame = np.full((height, width, 3), 20 * index, dtype=np.uint8)
    frame[:, : index + 1] = 255
    return frame



def encode_video(path, frames, codec=None, container_format=None, gop=3, fps=10):
    """Write frames with PyAV directly (independent of the code under test); small GOP to exercise seeking."""
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec or default_codec(), rate=fps)
        stream.height, stream.width = frames[0].shape[:2] if frames else (HEIGHT, WIDTH)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        container.start_encoding()
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture
def video(tmp_path):
    return encode_video(tmp_path / "clip.mp4", [frame_at(i) for i in range(10)])


def write_folder(folder, count, names=None):
    folder.mkdir()
    for index in range(count):
        PIL.Image.fromarray(frame_at(index)).save(folder / (names[index] if names else f"{index}.png"))
    return folder


# ---------------------------------------------------------------- video files


def test_video_file_is_read_lazily_with_metadata(video):
    source = open_frames(video)
    assert (source.name, source.num_frames, source.fps, source.size) == ("clip", 10, 10.0, (HEIGHT, WIDTH))
    frames = list(source)
    assert [index for index, _ in frames] == list(range(10))
    for index, frame in frames:
        assert frame.dtype == np.uint8 and frame.shape == (HEIGHT, WIDTH, 3)
        assert abs(float(frame[:, 20:].mean()) - 20 * index) < 6  # lossy, but the right frame
    assert open_frames(video, fps=25, name="x").fps == 25 and open_frames(video, name="x").name == "x"


def test_video_random_access_matches_iteration_in_any_order(video):
    frames = [frame for _, frame in open_frames(video)]
    fresh = open_frames(video)  # nothing decoded yet past frame 0: decodes forwards
    assert np.array_equal(fresh.frame(6), frames[6])
    source = open_frames(video)
    list(source)  # every timestamp known: seeks to the keyframe before the target
    for index in (7, 3, 9, 0, 5, 5, 1):
        assert np.array_equal(source.frame(index), frames[index]), index
    with pytest.raises(IndexError):
        source.frame(10)
    assert source.seekable
    for start in (8, 2, 0, 10):
        assert [index for index, _ in source.iter_from(start)] == list(range(start, 10))
    np.testing.assert_array_equal(next(open_frames(video).iter_from(4))[1], frames[4])


def test_raw_stream_without_frame_count_and_changing_size(tmp_path):
    """A raw MPEG-4 stream has no container: no frame count, no timestamps to seek by; two concatenated
    streams of different sizes make a video whose frames change size."""
    first = encode_video(tmp_path / "a.m4v", [frame_at(i) for i in range(3)], "mpeg4", "m4v")
    second = encode_video(tmp_path / "b.m4v", [frame_at(i, 32, 32) for i in range(3)], "mpeg4", "m4v")
    joined = tmp_path / "joined.m4v"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    assert open_frames(first).num_frames is None
    assert np.array_equal(open_frames(first).frame(2), [f for _, f in open_frames(first)][2])
    source = open_frames(joined)
    seen = []
    with pytest.raises(ValueError, match="frame 3 is 32x32 but the first frame is 64x48"):
        for index, _ in source:
            seen.append(index)
    assert seen == [0, 1, 2]


def test_unreadable_or_empty_videos_are_refused(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(ValueError, match="notes.mp4"):
        open_frames(text)
    with pytest.raises(ValueError, match="missing.mp4"):
        open_frames(tmp_path / "missing.mp4")
    empty = encode_video(tmp_path / "empty.avi", [], "mpeg4")  # AVI keeps a video stream with no frames
    with pytest.raises(ValueError, match="empty.avi.*no frames"):
        open_frames(empty)


def test_video_limits_apply_to_frames(video):
    with pytest.raises(ValueError, match="clip.mp4.*max_side"):
        open_frames(video, limits=ImageLimits(max_side=32))


def test_missing_pyav_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    with pytest.raises(ImportError, match=r"conceptseg\[video\]"):
        require_av()


# ---------------------------------------------------------------- folders


def test_folder_frames_in_natural_order(tmp_path):
    names = [f"frame_{i}.png" for i in range(12)]  # frame_2 < frame_10, unlike a plain sort
    folder = write_folder(tmp_path / "shots", 12, names)
    (folder / ".hidden.png").write_bytes(b"junk")  # hidden and non-image files are not frames
    (folder / "notes.txt").write_text("x")
    source = open_frames(folder)
    assert (source.name, source.num_frames, source.fps, source.size) == ("shots", 12, None, (HEIGHT, WIDTH))
    for index, frame in source:
        np.testing.assert_array_equal(frame, frame_at(index))
    np.testing.assert_array_equal(source.frame(10), frame_at(10))
    with pytest.raises(IndexError):
        source.frame(12)
    assert source.seekable and [index for index, _ in source.iter_from(9)] == [9, 10, 11]


def test_corrupt_folder_frame_is_skipped_and_later_indices_are_kept(tmp_path):
    folder = write_folder(tmp_path / "frames", 8)
    data = (folder / "5.png").read_bytes()
    (folder / "5.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    with pytest.warns(FrameSkippedWarning, match=r"frame 5 .*5\.png"):
        frames = list(open_frames(folder))
    assert [index for index, _ in frames] == [0, 1, 2, 3, 4, 6, 7]
    np.testing.assert_array_equal(dict(frames)[6], frame_at(6))
    with pytest.raises(ValueError, match="5.png"):  # asked for by index: an error, not a skip
        open_frames(folder).frame(5)


def test_empty_or_unreadable_folders_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        open_frames(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "0.png").write_bytes(b"not a png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FrameSkippedWarning)
        with pytest.raises(ValueError, match="no readable frame"):
            list(open_frames(tmp_path / "broken"))


def test_folder_frame_of_another_size_is_refused_at_that_frame(tmp_path):
    folder = write_folder(tmp_path / "frames", 4)
    PIL.Image.fromarray(frame_at(2, 32, 32)).save(folder / "2.png")
    seen = []
    with pytest.raises(ValueError, match="2.png: frame 2 is 32x32"):
        for index, _ in open_frames(folder):
            seen.append(index)
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="frame 2 is 32x32"):  # read out of order: still compared to the first
        open_frames(folder).frame(2)


# ---------------------------------------------------------------- frames in memory and streams


def test_frames_in_memory_have_random_access():
    array = np.stack([frame_at(i) for i in range(4)])
    for frames in (array, list(array), [PIL.Image.fromarray(f) for f in array]):
        source = open_frames(frames, fps=5)
        assert (source.num_frames, source.fps, source.size) == (4, 5, (HEIGHT, WIDTH))
        np.testing.assert_array_equal(source.frame(3), frame_at(3))
        assert [index for index, _ in source] == [0, 1, 2, 3] == [index for index, _ in source]
        assert source.seekable and [index for index, _ in source.iter_from(2)] == [2, 3]
    with pytest.raises(ValueError, match="no frames"):
        open_frames([])
    with pytest.raises(ValueError, match="frame 1"):
        list(open_frames([frame_at(0), frame_at(1).astype(np.float32)]))
    with pytest.raises(TypeError):
        open_frames(PIL.Image.fromarray(frame_at(0)))


def test_stream_is_read_once_forwards():
    def live():
        for index in range(6):
            yield frame_at(index) if index % 2 else PIL.Image.fromarray(frame_at(index))

    source = open_frames(live())
    assert source.num_frames is None and source.fps is None
    assert source.size == (HEIGHT, WIDTH)  # peeks at frame 0 without losing it
    np.testing.assert_array_equal(source.frame(2), frame_at(2))  # reads ahead, kept for the iteration
    frames = iter(source)
    for expected in range(4):
        index, frame = next(frames)
        assert index == expected
        np.testing.assert_array_equal(frame, frame_at(index))
        np.testing.assert_array_equal(source.frame(index), frame)  # the current frame
    with pytest.raises(ValueError, match="cannot seek backwards"):
        source.frame(1)
    with pytest.raises(ValueError, match="frame 0 was already read, and a stream cannot seek backwards"):
        iter(source)  # a second pass
    assert [index for index, _ in frames] == [4, 5]
    with pytest.raises(IndexError):
        source.frame(6)


def test_stream_iter_from_skips_forwards_and_close_ends_the_generator():
    finished = []

    def live():
        try:
            yield from (frame_at(index) for index in range(10))
        finally:
            finished.append(True)

    source = open_frames(live())
    assert not source.seekable
    source.frame(3)  # prompt frame 3 before propagating from it
    frames = source.iter_from(3)
    assert [next(frames)[0], next(frames)[0]] == [3, 4]
    assert next(source.iter_from(4))[0] == 4  # the current frame, again
    with pytest.raises(ValueError, match="cannot seek backwards"):
        source.iter_from(2)
    assert next(source.iter_from(7))[0] == 7  # frames 5 and 6 are read and dropped
    source.close()
    assert finished == [True]


def test_stream_that_ends_early_or_yields_bad_items():
    assert [index for index, _ in open_frames(iter([frame_at(0), frame_at(1)]))] == [0, 1]
    bad = iter([frame_at(0), frame_at(1), np.zeros((HEIGHT, WIDTH, 3), np.float64)])
    seen = []
    with pytest.raises(ValueError, match="stream: frame 2: .*uint8"):
        for index, _ in open_frames(bad):
            seen.append(index)
    assert seen == [0, 1]
    with pytest.raises(ValueError, match="frame 1: .*shape|frame 1: .*must be"):
        list(open_frames(iter([frame_at(0), np.zeros((4, 4, 2), np.uint8)])))
    with pytest.raises(ValueError, match="frame 1 is 32x32"):
        list(open_frames(iter([frame_at(0), frame_at(1, 32, 32)])))


# ---------------------------------------------------------------- overlays


def square_masks(count: int, shift: int) -> np.ndarray:
    masks = np.zeros((count, HEIGHT, WIDTH), dtype=bool)
    for k in range(count):
        masks[k, 10 + 2 * shift : 22 + 2 * shift, 4 + 28 * k : 20 + 28 * k] = True
    return masks


def test_track_colour_is_stable_across_frames():
    black = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    first = draw_tracks(black, [7, 3], square_masks(2, 0), labels=["dog", "cat"], scores=[0.9, 0.4])
    later = draw_tracks(black, [3, 7], square_masks(2, 3)[::-1], labels="dog", alpha=0.5)
    expected = (np.array(instance_colour(7)) * 0.5).round()
    assert np.array_equal(first[20, 10], expected) and np.array_equal(later[22, 10], expected)
    assert not np.array_equal(first[20, 40], expected)  # another id, another colour
    with pytest.raises(ValueError, match="masks must be"):
        draw_tracks(black, [1], square_masks(2, 0))


def test_overlay_video_round_trips(tmp_path):
    path = tmp_path / "overlay.mp4"
    frames = open_frames([frame_at(i) for i in range(5)])
    tracks = [{"track_ids": [1, 2], "masks": square_masks(2, t), "labels": ["dog", "cat"], "scores": [0.9, 0.8]}
              for t in range(5)]
    assert write_overlay_video(path, frames, tracks, fps=5) == path
    source = open_frames(path)
    assert source.size == (HEIGHT, WIDTH) and source.fps == 5
    read = [frame for _, frame in source]
    assert len(read) == 5
    # track 1 keeps its colour in every frame (lossy video: compare the mask interior's mean colour)
    colours = [frame[14 + 2 * t : 20 + 2 * t, 8:16].reshape(-1, 3).mean(axis=0) for t, frame in enumerate(read)]
    expected = [(frame_at(t)[16, 12] * 0.5 + np.array(instance_colour(1)) * 0.5) for t in range(5)]
    assert np.abs(np.array(colours) - np.array(expected)).max() < 12
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_video_writer_pads_odd_sizes_and_is_atomic(tmp_path):
    path = tmp_path / "odd.mp4"
    with VideoWriter(path, fps=10, size=(47, 63), codec="mpeg4") as writer:
        for index in range(3):
            writer.write(frame_at(index, 47, 63))
        with pytest.raises(ValueError, match="expected RGB uint8"):
            writer.write(frame_at(0))
    assert open_frames(path).size == (48, 64) and open_frames(path).num_frames == 3
    failed = tmp_path / "failed.mp4"
    with pytest.raises(RuntimeError), VideoWriter(failed, fps=10, size=(HEIGHT, WIDTH)) as writer:
        writer.write(frame_at(0))
        raise RuntimeError("interrupted")
    with pytest.raises(ValueError, match="no frames"):
        VideoWriter(failed, fps=10, size=(HEIGHT, WIDTH)).close()
    assert not failed.exists() and not list(tmp_path.glob(".*"))


# ---------------------------------------------------------------- YT-VIS results


def gt_pairs(num_frames: int) -> dict:
    return {(3, category): VideoPair(3, category, phrase, num_frames, HEIGHT, WIDTH)
            for category, phrase in ((1, "dog"), (2, "cat"))}


def test_ytvis_writer_output_is_what_evaluation_reads(tmp_path):
    path = tmp_path / "results.json"
    masks = {t: square_masks(2, t) for t in range(6)}
    with YtvisWriter(path, video_id=3, num_frames=6) as writer:
        for t in (0, 1, 2, 4):  # frame 3 never added (a skipped corrupt frame), frame 5 neither
            track_two = masks[t][1] if t != 2 else np.zeros((HEIGHT, WIDTH), bool)  # empty: absent at frame 2
            writer.add_frame(t, [1, 2], [1, 2], np.stack([masks[t][0], track_two]), [0.6 + 0.1 * t, 0.5])
        assert not path.exists() and len(list(tmp_path.glob(".*spool*"))) == 1  # frames spooled to disk
    assert not list(tmp_path.glob(".*"))
    records = json.loads(path.read_text())
    assert [(r["video_id"], r["category_id"], r["track_id"]) for r in records] == [(3, 1, 1), (3, 2, 2)]
    first, second = records
    assert first["score"] == pytest.approx(np.mean([0.6, 0.7, 0.8, 1.0]))
    assert second["score"] == pytest.approx(0.5)
    assert [s is None for s in second["segmentations"]] == [False, False, True, True, False, True]
    assert [b is None for b in first["bboxes"]] == [False, False, False, True, False, True]
    for t in (0, 1, 2, 4):
        np.testing.assert_array_equal(decode_mask(first["segmentations"][t], HEIGHT, WIDTH), masks[t][0])
        rle = mask_utils.encode(np.asfortranarray(masks[t][0].astype(np.uint8)))
        assert first["bboxes"][t] == mask_utils.toBbox(rle).tolist() and first["areas"][t] == masks[t][0].sum()
    masklets = read_video_predictions(path, gt_pairs(6))
    assert len(masklets[(3, 1)]) == 1 and masklets[(3, 2)][0].score == pytest.approx(0.5)


def test_ytvis_frame_added_again_replaces_it_and_length_defaults_to_last_frame(tmp_path):
    path = tmp_path / "results.json"
    writer = YtvisWriter(path, video_id=3)
    writer.add_frame(1, [1, 2], [1, 1], square_masks(2, 1), [0.9, 0.9])
    writer.add_frame(2, [1], [1], square_masks(1, 2), [0.7])
    writer.add_frame(1, [1], [1], square_masks(1, 0), [0.5])  # backward pass over frame 1 again
    writer.close()
    records = json.loads(path.read_text())
    assert [r["track_id"] for r in records] == [1]  # track 2 was only in the replaced frame 1
    assert records[0]["score"] == pytest.approx(0.6) and len(records[0]["segmentations"]) == 3
    np.testing.assert_array_equal(decode_mask(records[0]["segmentations"][1], HEIGHT, WIDTH), square_masks(1, 0)[0])
    empty = YtvisWriter(tmp_path / "none.json", video_id=3)
    empty.close()
    assert json.loads((tmp_path / "none.json").read_text()) == []


def test_ytvis_writer_refuses_bad_frames_and_aborts_cleanly(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("previous")
    with pytest.raises(RuntimeError), YtvisWriter(path, video_id=3, num_frames=4) as writer:
        writer.add_frame(0, [1], [1], square_masks(1, 0), [0.9])
        with pytest.raises(ValueError, match="has 4 frames"):
            writer.add_frame(4, [1], [1], square_masks(1, 0), [0.9])
        with pytest.raises(ValueError, match="1 masks but 2 track ids"):
            writer.add_frame(1, [1, 2], [1, 1], square_masks(1, 0), [0.9, 0.9])
        with pytest.raises(ValueError, match="masks must be bool"):
            writer.add_frame(1, [1], [1], square_masks(1, 0).astype(np.float32), [0.9])
        with pytest.raises(ValueError, match="same size"):
            writer.add_frame(1, [1], [1], np.ones((1, 8, 8), bool), [0.9])
        with pytest.raises(ValueError, match="appears twice"):
            writer.add_frame(1, [1, 1], [1, 1], square_masks(2, 0), [0.9, 0.9])
        raise RuntimeError("the model failed")
    assert path.read_text() == "previous" and not list(tmp_path.glob(".*"))


def test_frame_masks_png_holds_track_ids(tmp_path):
    masks = square_masks(2, 0)
    path = write_frame_masks_png(tmp_path / "masks", 7, [4, 9], masks)
    assert path.name == "00007.png"
    labels = np.asarray(PIL.Image.open(path))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 4, 9}
    np.testing.assert_array_equal(labels == 9, masks[1])
    wide = np.asarray(PIL.Image.open(write_frame_masks_png(tmp_path / "masks", 8, [4, 1000], masks)))
    assert wide.dtype == np.uint16 or wide.max() == 1000  # PIL reads 16-bit PNGs as uint16 or int32
    np.testing.assert_array_equal(wide == 1000, masks[1])
    with pytest.raises(ValueError, match="1 to 65535"):
        write_frame_masks_png(tmp_path / "masks", 9, [0, 1], masks)


# ---------------------------------------------------------------- atomic writes


def test_atomic_writes_replace_whole_files_or_nothing(tmp_path):
    path = tmp_path / "out.json"
    write_json_atomic(path, {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})  # fails half-way through the encoding
    assert json.loads(path.read_text()) == {"a": [1, 2]} and not list(tmp_path.glob(".*"))
    assert write_text_atomic(tmp_path / "note.txt", "hello").read_text() == "hello"
