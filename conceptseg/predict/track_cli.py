"""`conceptseg track`: find and track concepts (and clicked objects) through a video; writes YT-VIS results
and an overlay video.

    conceptseg track clip.mp4 --text "red car" --text person --out tracks/
    conceptseg track frames/ --box 0,10,20,60,80 --object-point 1,12,140,90 --max-frames 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from conceptseg.cli import UsageError, add_quantize_argument
from conceptseg.predict.cli import parse_prompt

DEFAULT_FPS = 10.0  # for folders and streams, which carry no frame rate


def register(subparsers: argparse._SubParsersAction) -> None:
    track = subparsers.add_parser("track", help="segment and track every instance of a concept in a video")
    track.add_argument("source", metavar="VIDEO", help="a video file or a folder of frames")
    track.add_argument("--text", action="append", default=[], help="noun phrase (repeat for several concepts)")
    track.add_argument("--box", action="append", default=[], metavar="F,X1,Y1,X2,Y2[,neg]",
                       help="exemplar box on frame F, in pixels: a concept (repeat; boxes on one frame are one prompt)")
    track.add_argument("--object-point", action="append", default=[], metavar="ID,F,X,Y[,neg]",
                       help="a click on object ID on frame F (creates or refines that object; repeat)")
    track.add_argument("--object-box", action="append", default=[], metavar="ID,F,X1,Y1,X2,Y2",
                       help="a box around object ID on frame F (creates or refines it)")
    track.add_argument("--model", default=None, help="checkpoint path or hub id (default: the embedded model)")
    track.add_argument("--out", type=Path, default=Path("conceptseg_tracks"), help="output directory")
    track.add_argument("--max-frames", type=int, default=None, metavar="N", help="track at most N frames")
    track.add_argument("--start", type=int, default=None, metavar="F",
                       help="first frame (default: the first prompted frame)")
    track.add_argument("--direction", choices=("forward", "backward", "both"), default="forward")
    track.add_argument("--threshold", type=float, default=None,
                       help="detection score threshold (default: SAM 3's 0.5)")
    track.add_argument("--hotstart-delay", type=int, default=None, metavar="N",
                       help="frames of output delay that let young false positives be removed (default 15; 0 = off)")
    track.add_argument("--save-masks", action="store_true", help="also write one PNG label map per frame")
    track.add_argument("--no-overlay", action="store_true", help="do not write the overlay video")
    track.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_quantize_argument(track)
    track.set_defaults(func=run_track)


def add_prompts(session, args: argparse.Namespace) -> None:
    """The command line's prompts, as session prompts (concept boxes grouped by frame)."""
    boxes_by_frame: dict[int, list[tuple[list[float], int]]] = {}
    for value in args.box:
        numbers, label = parse_prompt(value, 5, "--box", "F,X1,Y1,X2,Y2 (frame index, then pixels)")
        boxes_by_frame.setdefault(int(numbers[0]), []).append((numbers[1:], label))
    texts = list(args.text)
    for frame, boxes in sorted(boxes_by_frame.items()):
        text = texts.pop(0) if texts and len(boxes_by_frame) == 1 else None  # one phrase + its exemplars
        session.add_prompt(frame, text=text, boxes=[b for b, _ in boxes], box_labels=[label for _, label in boxes])
    for text in texts:
        session.add_prompt(0, text=text)
    for value in args.object_point:
        numbers, label = parse_prompt(value, 4, "--object-point", "ID,F,X,Y (object id, frame index, pixels)")
        session.add_prompt(int(numbers[1]), points=[numbers[2:]], point_labels=[label], obj_id=int(numbers[0]))
    for value in args.object_box:
        numbers, _ = parse_prompt(value, 6, "--object-box", "ID,F,X1,Y1,X2,Y2 (object id, frame index, pixels)")
        session.add_prompt(int(numbers[1]), boxes=[numbers[2:]], obj_id=int(numbers[0]))


def run_track(args: argparse.Namespace) -> int:
    if not (args.text or args.box or args.object_point or args.object_box):
        raise UsageError("give at least one --text, --box, --object-point or --object-box")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be >= 1, got {args.max_frames}")
    from conceptseg import load_model
    from conceptseg.io.overlay import VideoWriter, draw_tracks
    from conceptseg.io.ytvis import YtvisWriter, write_frame_masks_png
    from conceptseg.predict.video import VideoPredictor
    from conceptseg.predict.video_settings import VideoSettings

    overrides = {"detection_threshold": args.threshold, "hotstart_delay": args.hotstart_delay}
    if args.hotstart_delay is not None:
        overrides |= {"hotstart_unmatched_frames": min(8, args.hotstart_delay),
                      "hotstart_duplicate_frames": min(8, args.hotstart_delay)}
    settings = VideoSettings(**{k: v for k, v in overrides.items() if v is not None})
    predictor = VideoPredictor(load_model(args.model, device=args.device, quantize=args.quantize), settings)
    args.out.mkdir(parents=True, exist_ok=True)
    with predictor.start(args.source) as session:
        add_prompts(session, args)
        categories = {prompt.label: prompt.prompt_id for prompt in session.prompts}
        fps = session.frames.fps or DEFAULT_FPS
        height, width = session.frames.size
        total = session.frames.num_frames if args.max_frames is None else args.max_frames
        results_path = args.out / "results.json"
        overlay = None if args.no_overlay else VideoWriter(args.out / "overlay.mp4", fps, (height, width))
        with YtvisWriter(results_path, video_id=1, num_frames=session.frames.num_frames) as writer:
            frames = tqdm(session.propagate(args.direction, args.start, args.max_frames), total=total,
                          desc="track", unit="frame", file=sys.stderr)
            try:
                for result in frames:
                    category_ids = [categories.get(label, 0) for label in result.labels]
                    writer.add_frame(result.frame_index, result.object_ids, category_ids, result.masks,
                                     result.scores)
                    if args.save_masks:
                        write_frame_masks_png(args.out / "masks", result.frame_index, result.object_ids,
                                              result.masks)
                    if overlay is not None:
                        overlay.write(draw_tracks(result.image, result.object_ids, result.masks, result.boxes,
                                                  result.labels, result.scores))
            except BaseException:
                if overlay is not None:
                    overlay.abort()
                raise
        if overlay is not None:
            overlay.close()
    print(f"results -> {results_path}" + ("" if overlay is None else f", overlay -> {args.out / 'overlay.mp4'}"))
    return 0
