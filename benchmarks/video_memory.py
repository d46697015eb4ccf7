"""Memory and speed of video tracking against video length: peak RSS and per-frame time must not grow.

    python benchmarks/video_memory.py [--lengths 100 300 1000] [--threads 2]

Each length runs in a fresh process: a synthetic concept-world stream (a 64-frame clip played back and forth,
generated lazily, so the source holds the same few frames whatever the length) is tracked with the embedded
model's detector and a tracker with random weights (the embedded model carries no tracker weights yet; the
cost and the memory do not depend on what the weights are), prompted with the clip's phrase and one clicked
object. Printed per length: peak RSS, the mean time of a frame's detect-and-track step after 20 warm-up
frames, the mean over the first and the last 100 of those, and the largest number of objects tracked at once.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CLIP_FRAMES = 64
WARM_UP = 20


def ping_pong(frames, length: int):
    """The clip's frames back and forth (0..63, 62..0, 1..) for `length` frames: continuous motion, no copies."""
    period = 2 * (len(frames) - 1)
    for index in range(length):
        phase = index % period
        yield frames[phase if phase < len(frames) else period - phase]


def run_once(length: int, threads: int) -> dict:
    import torch

    from conceptseg import SAM3, load_model
    from conceptseg.data import ConceptWorld
    from conceptseg.predict.video import VideoPredictor

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = load_model()
    model.tracker.load_state_dict(SAM3(model.config).tracker.state_dict())  # random tracker weights
    model.missing_components = ()
    world = ConceptWorld(size=224, split="test", seed=11)
    clip = next(c for c in (world.video(i, num_frames=CLIP_FRAMES) for i in range(50)) if c.kind == "positive")
    frames = list(clip.frames)
    times, most_objects = [], 0
    with VideoPredictor(model).start(ping_pong(frames, length)) as session:
        session.add_prompt(0, text=clip.phrase)
        session.add_prompt(0, points=[[112, 112]], obj_id=1000)
        step = session.step.run

        def timed_step(*args, **kwargs):
            started = time.perf_counter()
            results = step(*args, **kwargs)
            times.append(time.perf_counter() - started)
            return results

        session.step.run = timed_step
        for _ in session.propagate():
            most_objects = max(most_objects, len(session.object_ids))
    steady = times[WARM_UP:] or times
    return {
        "frames": length,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ms_per_frame": 1000 * sum(steady) / len(steady),
        "ms_first_100": 1000 * sum(steady[:100]) / len(steady[:100]),
        "ms_last_100": 1000 * sum(times[-100:]) / len(times[-100:]),
        "most_objects": most_objects,
        "phrase": clip.phrase,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's run
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_once(args.one, args.threads)))
        return
    rows = []
    for length in args.lengths:
        child = subprocess.run([sys.executable, __file__, "--one", str(length), "--threads", str(args.threads)],
                               check=True, capture_output=True, text=True)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        print(f"{row['frames']:5d} frames: peak RSS {row['peak_rss_mib']:7.1f} MiB, {row['ms_per_frame']:6.1f} ms/frame "
              f"(first 100: {row['ms_first_100']:.1f}, last 100: {row['ms_last_100']:.1f}), "
              f"up to {row['most_objects']} objects", flush=True)
    first, last = rows[0], rows[-1]
    print(f"RSS {last['frames']} vs {first['frames']} frames: {100 * (last['peak_rss_mib'] / first['peak_rss_mib'] - 1):+.1f}%; "
          f"per-frame time: {100 * (last['ms_per_frame'] / first['ms_per_frame'] - 1):+.1f}%")


if __name__ == "__main__":
    main()
