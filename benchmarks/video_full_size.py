"""Full-size video benchmark: conceptseg's VideoPredictor vs transformers' Sam3VideoModel on the same inputs.

    python benchmarks/video_full_size.py [--frames 30] [--threads 2] [--cache DIR] [--prompt car]

A released-size `Sam3VideoModel` (transformers' default `Sam3VideoConfig`: detector ~840 M parameters +
tracker) gets deterministic random weights (every parameter re-initialised from a seed, well scaled, as the
parity tests do: no value is left to an init that could be uninitialised memory or change between versions)
and is saved once with `save_pretrained` to a cache folder (3.2 GiB, reused by later runs); conceptseg loads
the same folder with `load_model` (the video layout's `detector_model.*` / `tracker_model.*` keys give
detector and tracker). Both sides see the same N synthetic 1008x1008 frames (a concept-world clip, rendered
deterministically in each process and checked by hash), held in memory as a list of RGB arrays, and the same
text prompt on frame 0, then propagate forward over every frame.

Each side runs in its own process, one after the other, so that its peak RSS (`ru_maxrss`) is its own:
* conceptseg: `load_model` -> `VideoPredictor(model, settings).start(frames)` -> `add_prompt(0, text=...)` ->
  iterate `propagate()` (results come out at the frame's size).
* transformers: `Sam3VideoModel.from_pretrained` -> `Sam3VideoProcessor.init_video_session` (cpu, float32; the
  video processor with mean = std = 0.5 and size 1008, as SAM 3 needs) -> `add_text_prompt` -> iterate
  `propagate_in_video_iterator`, each output through `postprocess_outputs` (masks at the frame's size).

Like with like: offline, transformers silently skips mask NMS and hole filling (its `cv-utils` hub kernel is
missing), so both are turned off on both sides (`nms_iou_threshold=0, fill_hole_area=0`); every other
heuristic setting of ours (`VideoSettings`, the release's values) is copied onto transformers' attributes,
including our object cap (64; transformers' default 10000 only matters if more objects are found). For
text-only prompts transformers skips the geometry encoder while the release (and conceptseg) always run it;
transformers is given the masked dummy box (label -10, parity-reference section 8) so that both compute the
same thing.

Printed per side: model load time, setup (session start + prompt; transformers pre-processes the whole video
here), the first frame's step time and the mean step time of the later frames (ours: one detect-and-track
step, pre-processing included; transformers: one `forward`, its pre-processing was in the setup), propagation
wall time per frame (including transformers' post-processing), RSS: the peak while loading, the RSS after
loading, the peak after loading (session + propagation; the peak count is restarted after loading through
/proc/self/clear_refs) and the overall peak, and the objects tracked at the end; then the ratios ours /
transformers. transformers memory-maps the safetensors file and pages the weights in during the first frame,
so its "after load" RSS is small and its weights show up in the later peak; the overall peak is what a user's
process reaches.

With random weights the detector scores every query far below the release's 0.5 threshold, so by default no
object is ever found and only detection is timed; `--detection-threshold` (on both sides) just below the top
scores (about 0.174 here) starts a few objects on frame 0, which are then tracked on the later frames."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = ("transformers", "conceptseg")
SEED = 0
CLIP = dict(size=1008, split="test", seed=0)  # ConceptWorld arguments; clip index 0
IMAGE_SIZE = 1008
NEEDED_GIB = 7.0  # the saved fp32 weights (3.2 GiB) plus a margin
MARKER = "benchmark_complete.json"


# frames -----------------------------------------------------------------------------------------------------


def make_frames(count: int) -> tuple[list, str]:
    """The benchmark's frames (RGB uint8, 1008x1008) and their sha256: identical in every process."""
    from conceptseg.data import ConceptWorld

    clip = ConceptWorld(**CLIP).video(0, num_frames=count)
    frames = [frame.copy() for frame in clip.frames]
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(frame.tobytes())
    return frames, digest.hexdigest()


# weights ----------------------------------------------------------------------------------------------------


def build_weights(folder: Path) -> None:
    """Random full-size Sam3VideoModel, deterministic, saved in the hub layout (runs in a child process)."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    sys.path.insert(0, str(ROOT / "tests"))
    from hf_reference import randomize_, with_tied_fourier_matrix

    started = time.perf_counter()
    torch.manual_seed(SEED)  # the buffers randomize_ leaves alone
    model = Sam3VideoModel(Sam3VideoConfig())
    randomize_(model, seed=SEED)
    with torch.no_grad():
        with_tied_fourier_matrix(model.tracker_model)
    count = sum(p.numel() for p in model.parameters())
    print(f"  built Sam3VideoModel: {count / 1e6:.0f} M parameters in {time.perf_counter() - started:.0f} s",
          flush=True)
    model.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({"seed": SEED, "parameters": count,
                                             "transformers": __import__("transformers").__version__}))
    seconds = time.perf_counter() - started
    print(f"  saved to {folder} ({folder_gib(folder):.2f} GiB) in {seconds:.0f} s", flush=True)


def folder_gib(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 2**30


def ensure_weights(cache: Path, threads: int) -> Path:
    """The cached weight folder, built once (in a child process, so that this process stays small)."""
    folder = cache / "sam3_video_random"
    if (folder / MARKER).exists():
        print(f"weights: reusing {folder} ({folder_gib(folder):.2f} GiB)", flush=True)
        return folder
    if folder.exists():  # an interrupted build
        shutil.rmtree(folder)
    cache.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(cache).free / 2**30
    if free_gib < NEEDED_GIB:
        raise SystemExit(f"not enough free disk in {cache}: {free_gib:.1f} GiB free, the random full-size "
                         f"weights need about {NEEDED_GIB:.0f} GiB; free some space or pass --cache DIR on a "
                         "larger disk")
    print(f"weights: building a random full-size Sam3VideoModel into {folder} (once; {free_gib:.0f} GiB "
          "free)", flush=True)
    folder.mkdir()
    run_child("build", folder, threads, frames=1, prompt="-", workdir=cache)
    return folder


# the two sides ----------------------------------------------------------------------------------------------


def rss_gib() -> float:
    """Current resident set size (VmRSS) in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def peak_rss_gib() -> float:
    """Peak RSS of this process (since the last `reset_peak_rss`) in GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count (Linux: `5` into /proc/self/clear_refs), so that the run's peak can be told
    apart from the loading's; False where that is not possible (the peaks are then both the overall one)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def measured_load(load):
    """Run `load()`; return its result and the seconds, the peak RSS while loading, the RSS after, and
    whether the peak count could be restarted."""
    started = time.perf_counter()
    model = load()
    seconds, peak, after = time.perf_counter() - started, peak_rss_gib(), rss_gib()
    return model, dict(load_s=seconds, load_peak_rss_gib=peak, rss_after_load_gib=after,
                       peak_reset=reset_peak_rss())


def settings_for_benchmark(detection_threshold: float):
    """Our defaults, with the two steps transformers skips offline turned off."""
    from conceptseg import VideoSettings

    return VideoSettings(nms_iou_threshold=0.0, fill_hole_area=0, detection_threshold=detection_threshold)


# transformers' attribute -> our VideoSettings field
HF_SETTINGS = {
    "score_threshold_detection": "detection_threshold", "det_nms_thresh": "nms_iou_threshold",
    "new_det_thresh": "new_object_score", "assoc_iou_thresh": "association_iou",
    "trk_assoc_iou_thresh": "track_unmatched_iou", "hotstart_delay": "hotstart_delay",
    "hotstart_unmatch_thresh": "hotstart_unmatched_frames",
    "hotstart_dup_thresh": "hotstart_duplicate_frames",
    "recondition_every_nth_frame": "recondition_every", "high_conf_thresh": "recondition_detection_score",
    "high_iou_thresh": "recondition_iou", "fill_hole_area": "fill_hole_area",
    "suppress_overlapping_based_on_recent_occlusion_threshold": "overlap_iou_threshold",
    "max_num_objects": "max_objects",
}


def timed(function, times: list):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = function(*args, **kwargs)
        times.append(time.perf_counter() - started)
        return result

    return wrapper


def run_conceptseg(folder: Path, frames: list, prompt: str, threshold: float) -> dict:
    from conceptseg import VideoPredictor, load_model

    model, loading = measured_load(lambda: load_model(folder))
    started = time.perf_counter()
    session = VideoPredictor(model, settings_for_benchmark(threshold)).start(frames)
    session.add_prompt(0, text=prompt)
    setup_s = time.perf_counter() - started
    steps: list[float] = []
    session.step.run = timed(session.step.run, steps)
    started, visible = time.perf_counter(), 0
    for results in session.propagate():
        visible = len(results.object_ids)
    propagate_s = time.perf_counter() - started
    tracked = len(session.object_ids)
    session.close()
    return dict(loading, setup_s=setup_s, steps_s=steps, propagate_s=propagate_s, tracked_at_end=tracked,
                visible_last_frame=visible)


def clip_tokenizer(directory: Path):
    """transformers' CLIP tokenizer, written offline from the BPE file that conceptseg ships."""
    import gzip
    import importlib.resources

    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    if not (directory / "merges.txt").exists():
        bpe = importlib.resources.files("conceptseg") / "assets" / "bpe_simple_vocab_16e6.txt.gz"
        merges = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
        byte_symbols = list(bytes_to_unicode().values())
        tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + [m.replace(" ", "") for m in merges]
        tokens += ["<|startoftext|>", "<|endoftext|>"]
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
        (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer.from_pretrained(str(directory), model_max_length=32)


def with_geometry_cls(model) -> None:
    """Text-only prompts: give transformers' detector the masked dummy box so that it runs the geometry
    encoder (and appends its CLS token), as the release and conceptseg do."""
    import torch

    detector = model.detector_model.forward

    def forward(*args, **kwargs):
        if kwargs.get("input_boxes") is None:
            kwargs.update(input_boxes=torch.tensor([[[0.5, 0.5, 0.1, 0.1]]]),
                          input_boxes_labels=torch.tensor([[-10]]))
        return detector(*args, **kwargs)

    model.detector_model.forward = forward


def run_transformers(folder: Path, frames: list, prompt: str, threshold: float, workdir: Path) -> dict:
    import torch
    from transformers import Sam3ImageProcessor, Sam3VideoModel, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor
    from transformers.utils import logging

    logging.set_verbosity_error()  # offline-kernel warnings: NMS and hole filling are off on both sides
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(size=size),
        video_processor=Sam2VideoVideoProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3, size=size),
        tokenizer=clip_tokenizer(workdir / "clip_tokenizer"),
    )
    model, loading = measured_load(lambda: Sam3VideoModel.from_pretrained(folder, dtype=torch.float32).eval())
    settings = settings_for_benchmark(threshold)
    for name, ours in HF_SETTINGS.items():
        setattr(model, name, getattr(settings, ours))
    with_geometry_cls(model)
    with torch.inference_mode():
        started = time.perf_counter()
        session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
        processor.add_text_prompt(session, prompt)
        setup_s = time.perf_counter() - started
        steps: list[float] = []
        model.forward = timed(model.forward, steps)
        started, visible = time.perf_counter(), 0
        for out in model.propagate_in_video_iterator(inference_session=session, start_frame_idx=0):
            shown = processor.postprocess_outputs(session, out)
            visible = len(shown["object_ids"])
        propagate_s = time.perf_counter() - started
    return dict(loading, setup_s=setup_s, steps_s=steps, propagate_s=propagate_s,
                tracked_at_end=len(session.obj_ids), visible_last_frame=visible)


def child(which: str, folder: Path, threads: int, frames: int, prompt: str, threshold: float,
          workdir: Path) -> None:
    import torch

    torch.set_num_threads(threads)
    if which == "build":
        build_weights(folder)
        return
    clip, digest = make_frames(frames)
    load_before = os.getloadavg()[0]
    if which == "conceptseg":
        result = run_conceptseg(folder, clip, prompt, threshold)
    else:
        result = run_transformers(folder, clip, prompt, threshold, workdir)
    run_peak = peak_rss_gib()
    result.update(run_peak_rss_gib=run_peak, peak_rss_gib=max(run_peak, result["load_peak_rss_gib"]),
                  frames_sha256=digest, load_average=[load_before, os.getloadavg()[0]],
                  torch=torch.__version__, threads=torch.get_num_threads())
    (workdir / f"{which}.json").write_text(json.dumps(result))


def run_child(which: str, folder: Path, threads: int, frames: int, prompt: str, workdir: Path,
              threshold: float = 0.5) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    command = [sys.executable, __file__, "--child", which, "--weights", str(folder),
               "--threads", str(threads), "--frames", str(frames), "--prompt", prompt,
               "--detection-threshold", repr(threshold), "--workdir", str(workdir)]
    done = subprocess.run(command, env=env)
    if done.returncode != 0:
        code = done.returncode
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        hint = " (signal 9 usually means out of memory)" if code == -9 else ""
        raise SystemExit(f"the {which} process failed: {how}{hint}")


# report -----------------------------------------------------------------------------------------------------


def summary(result: dict) -> dict:
    steps = result["steps_s"]
    later = steps[1:]
    return {
        "load (s)": result["load_s"],
        "setup (s)": result["setup_s"],
        "frame 0 step (s)": steps[0] if steps else float("nan"),
        "later frames, mean step (s)": sum(later) / len(later) if later else float("nan"),
        "propagate wall / frame (s)": result["propagate_s"] / max(len(steps), 1),
        "peak RSS while loading (GiB)": result["load_peak_rss_gib"],
        "RSS after load (GiB)": result["rss_after_load_gib"],
        "peak RSS after load (GiB)": result["run_peak_rss_gib"] if result["peak_reset"] else float("nan"),
        "peak RSS, overall (GiB)": result["peak_rss_gib"],
        "objects tracked at end": result["tracked_at_end"],
        "objects shown, last frame": result["visible_last_frame"],
    }


def report(results: dict, frames: int, threads: int, prompt: str, threshold: float) -> None:
    theirs, ours = summary(results["transformers"]), summary(results["conceptseg"])
    first = results["transformers"]
    print(f"\nfull-size SAM 3 video, random weights, {frames} frames of 1008x1008, prompt {prompt!r}, "
          f"{threads} threads, torch {first['torch']}, float32 CPU")
    print("both sides: mask NMS and hole filling off (transformers skips them offline), other heuristics = "
          f"conceptseg's VideoSettings defaults (max 64 objects), detection threshold {threshold}; "
          "transformers given the masked dummy box for the text prompt (as the release)")
    print(f"\n{'':30s}{'transformers':>14s}{'conceptseg':>14s}{'ours/theirs':>13s}")
    for key in theirs:
        a, b = theirs[key], ours[key]
        if isinstance(a, int):
            print(f"{key:30s}{a:14d}{b:14d}")
        else:
            ratio = b / a if a else float("nan")
            print(f"{key:30s}{a:14.2f}{b:14.2f}{ratio:13.2f}")
    for side in SIDES:
        steps = ", ".join(f"{s:.1f}" for s in results[side]["steps_s"])
        load = results[side]["load_average"]
        print(f"{side} step times (s): {steps}   "
              f"[1-min load average before/after: {load[0]:.1f}/{load[1]:.1f}]")
    key = "later frames, mean step (s)" if frames > 1 else "frame 0 step (s)"
    verdict = {True: "PASS", False: "FAIL"}
    later = len(results["conceptseg"]["steps_s"]) - 1
    note = f" [{later} later frame(s); step times vary by about 5% run to run]" if later < 10 else ""
    print(f"\ntarget per-frame time <= transformers' ({key}): {verdict[ours[key] <= theirs[key]]}{note}")
    for key in ("peak RSS, overall (GiB)", "peak RSS after load (GiB)"):
        if ours[key] == ours[key]:  # not NaN
            print(f"target {key[:-6]} lower: {verdict[ours[key] < theirs[key]]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="frames to propagate over (default 30)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per side (default 2)")
    parser.add_argument("--prompt", default="car", help="text prompt on frame 0 (default 'car')")
    parser.add_argument("--detection-threshold", type=float, default=0.5,
                        help="score a detection must exceed, on both sides (default 0.5, the release's; the "
                             "random model scores far below it: about 0.174 starts a few objects on frame 0)")
    default_cache = Path(tempfile.gettempdir()) / "conceptseg_video_full_size"
    parser.add_argument("--cache", type=Path, default=default_cache,
                        help="folder for the random weights (reused if present) and the run's files")
    parser.add_argument("--only", choices=SIDES, help="run one side only (the other's last result is reused)")
    parser.add_argument("--child", choices=("build",) + SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    if args.child:
        child(args.child, args.weights, args.threads, args.frames, args.prompt, args.detection_threshold,
              args.workdir)
        return
    folder = ensure_weights(args.cache, args.threads)
    workdir = args.cache / "runs"
    workdir.mkdir(parents=True, exist_ok=True)
    run = dict(frames=args.frames, threads=args.threads, prompt=args.prompt,
               detection_threshold=args.detection_threshold)
    for side in SIDES:
        path = workdir / f"{side}.json"
        reusable = path.exists() and json.loads(path.read_text()).get("run") == run
        if args.only and side != args.only and reusable:
            print(f"{side}: reusing the last result with the same settings ({path})", flush=True)
            continue
        path.unlink(missing_ok=True)
        print(f"running {side} ({args.frames} frames) ...", flush=True)
        started = time.perf_counter()
        run_child(side, folder, args.threads, args.frames, args.prompt, workdir, args.detection_threshold)
        print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
        result = json.loads(path.read_text())
        path.write_text(json.dumps(dict(result, run=run)))
    results = {side: json.loads((workdir / f"{side}.json").read_text()) for side in SIDES}
    digests = {r["frames_sha256"] for r in results.values()}
    if len(digests) != 1:
        raise SystemExit("the two sides saw different frames (frame hashes differ)")
    report(results, args.frames, args.threads, args.prompt, args.detection_threshold)


if __name__ == "__main__":
    main()
