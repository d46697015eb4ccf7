"""Load on `conceptseg serve` over loopback: latency, throughput, errors and server memory.

    python benchmarks/serve_load.py [--clients 8] [--seconds 60] [--threads 2] [--disconnects 20]

Starts the server in a subprocess (the embedded model; its tracker gets random weights so that the video
endpoints run, as `conceptseg demo --video` does: the cost does not depend on the weights). Then:
1. load: `--clients` concurrent clients for `--seconds`, each looping over concept-world images: upload, a
   phrase, a re-prompt with another phrase and an exemplar box, a click (point prompt). Printed: p50/p95
   latency per request kind, requests/s, errors (non-2xx answers; 0 expected), server RSS after warm-up
   and at the end.
2. disconnects: `--disconnects` clients each open a video session (12 frames), prompt a phrase, start the
   propagation stream, read one frame and hang up without closing the session. The server closes idle
   sessions after --idle seconds: printed are the open sessions and the busy workers once that has passed
   (0 and 0 expected) and the server RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np

PHRASE_PAIRS = 16
VIDEO_FRAMES = 12


def serve(port: int, threads: int, idle: float, max_sessions: int) -> None:
    """The server process: the embedded model with an untrained tracker."""
    import torch
    import uvicorn

    from conceptseg import load_model
    from conceptseg.predict.demo_video import allow_untrained_tracker
    from conceptseg.serve import ServeLimits, create_app

    torch.set_num_threads(threads)
    model = load_model()
    allow_untrained_tracker(model)
    limits = ServeLimits(session_idle_seconds=idle, max_sessions=max_sessions, max_queued=64)
    uvicorn.run(create_app(model, limits, model_name="embedded"), host="127.0.0.1", port=port, log_level="error")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def png(array: np.ndarray) -> bytes:
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def workload() -> tuple[list, list[bytes]]:
    from conceptseg.data import ConceptWorld

    world = ConceptWorld(size=224, split="test", seed=77)
    samples = [world.sample(i) for i in range(PHRASE_PAIRS)]
    clip = world.video(0, num_frames=VIDEO_FRAMES)
    return samples, [png(frame) for frame in clip.frames]


async def client_loop(client, samples, rng: np.random.Generator, until: float, latencies: dict, errors: list) -> None:
    async def call(kind: str, method: str, url: str, **kwargs):
        started = time.perf_counter()
        answer = await client.request(method, url, **kwargs)
        latencies.setdefault(kind, []).append(time.perf_counter() - started)
        if answer.status_code >= 300:
            errors.append(f"{kind}: {answer.status_code} {answer.text[:120]}")
            return None
        return answer.json()

    while time.monotonic() < until:
        sample, other = (samples[i] for i in rng.choice(len(samples), 2, replace=False))
        uploaded = await call("upload", "POST", "/v1/images", files={"file": ("scene.png", png(sample.image))})
        if uploaded is None:
            continue
        segment = f"/v1/images/{uploaded['image_id']}/segment"
        x1, y1, x2, y2 = (float(v) for v in sample.instance_boxes[0])
        await call("phrase", "POST", segment, json={"text": sample.phrase})
        await call("re-prompt", "POST", segment, json={"text": other.phrase, "boxes": [[x1, y1, x2, y2]]})
        await call("click", "POST", segment, json={"text": sample.phrase, "points": [[(x1 + x2) / 2, (y1 + y2) / 2]]})


async def load_phase(url: str, clients: int, seconds: float, samples) -> tuple[dict, list, float]:
    import httpx

    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    until = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client, samples, np.random.default_rng(n), until, latencies, errors)
                               for n in range(clients)))
        elapsed = time.perf_counter() - started
    return latencies, errors, elapsed


def disconnect_phase(url: str, count: int, frames: list[bytes]) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(count):
            files = [("frames", (f"{i}.png", frame, "image/png")) for i, frame in enumerate(frames)]
            video = client.post("/v1/videos", files=files)
            video.raise_for_status()
            video_id = video.json()["video_id"]
            client.post(f"/v1/videos/{video_id}/prompts", json={"text": "circles"}).raise_for_status()
            with client.stream("GET", f"/v1/videos/{video_id}/propagate") as stream:
                next(stream.iter_lines())  # one frame, then hang up


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    parser.add_argument("--disconnects", type=int, default=20)
    parser.add_argument("--idle", type=float, default=3.0, help="the server's session idle timeout (s)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # the server process
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.threads, args.idle, max_sessions=args.disconnects + 1)
        return
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", str(port), "--threads",
                               str(args.threads), "--idle", str(args.idle), "--disconnects", str(args.disconnects)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/v1/health").raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        samples, frames = workload()
        asyncio.run(load_phase(url, 2, 3, samples))  # warm-up
        start_rss = rss_mib(server.pid)
        latencies, errors, elapsed = asyncio.run(load_phase(url, args.clients, args.seconds, samples))
        end_rss = rss_mib(server.pid)
        total = sum(len(values) for values in latencies.values())
        print(f"load: {args.clients} clients x {args.seconds:g} s, server torch threads {args.threads}")
        for kind, values in latencies.items():
            print(f"  {kind:10s} n={len(values):5d}  p50 {percentile(values, 50):7.1f} ms  p95 {percentile(values, 95):7.1f} ms")
        every = [v for values in latencies.values() for v in values]
        print(f"  all        n={total:5d}  p50 {percentile(every, 50):7.1f} ms  p95 {percentile(every, 95):7.1f} ms")
        print(f"  throughput {total / elapsed:.1f} requests/s, errors {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
        print(f"  server RSS {start_rss:.1f} MiB after warm-up, {end_rss:.1f} MiB at the end ({(end_rss / start_rss - 1) * 100:+.1f} %)")
        disconnect_phase(url, args.disconnects, frames)
        time.sleep(args.idle + 6)  # the server sweeps idle sessions at least every 5 s
        health = httpx.get(f"{url}/v1/health").json()
        print(f"disconnects: {args.disconnects} clients hung up mid-stream; after {args.idle + 6:g} s: open sessions "
              f"{health['videos']}, busy workers {health['busy']}, server RSS {rss_mib(server.pid):.1f} MiB")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
