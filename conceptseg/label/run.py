"""`label()`: list the items, skip the shards a previous run finished, run an engine, write shards, assemble.

    from conceptseg.label import label
    summary = label(["photos/"], ["red car", "person"], "labels/")            # local engine
    summary = label(["photos/"], ["red car"], "labels/", engine="ray")        # same output, on Ray Data

A run is identified by its plan: the items (paths, kinds, concepts), the model's name and version, the
threshold, the frame and image limits and the shard size. `OUT/plan.json` records it; a rerun with the same plan
resumes, one with another plan is refused (a mix of two runs' labels would be neither). The engine, batch size
and worker counts are not part of the plan: a run may resume on another engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

import conceptseg
from conceptseg.io.atomic import write_json_atomic
from conceptseg.label.engines import ENGINES, RayOptions, run_local, run_ray
from conceptseg.label.outputs import FORMATS, count_outputs, write_coco, write_errors, write_saco
from conceptseg.label.shards import ShardWriter, completed_shards, remove_partial_files
from conceptseg.label.sources import Item, list_items
from conceptseg.label.stages import LabelSettings

DEFAULT_SHARD_SIZE = 256


@dataclass
class LabelSummary:
    """What a run did: counts over the whole output, and this run's share and time."""

    out: Path
    counts: dict
    shards: int
    shards_skipped: int
    items_this_run: int
    seconds: float


def label(
    sources: Sequence[str],
    concepts: Sequence[str],
    out: str | Path,
    *,
    settings: LabelSettings | None = None,
    engine: str = "local",
    batch_size: int = 4,
    shard_size: int = DEFAULT_SHARD_SIZE,
    output_format: str = "parquet",
    ray_options: RayOptions | None = None,
    progress: bool = True,
) -> LabelSummary:
    """Label every matching instance of each concept in the sources' images and videos into `out`."""
    settings = settings or LabelSettings()
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {output_format!r}")
    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch size and shard size must be >= 1, got {batch_size} and {shard_size}")
    if not 0.0 <= settings.threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {settings.threshold}")
    from conceptseg.checkpoint import checkpoint_identity

    started = time.monotonic()
    out = Path(out)
    items = list_items(sources, concepts)
    identity = checkpoint_identity(settings.model)
    plan = _plan(items, settings, identity, shard_size)
    _claim(out, plan)
    remove_partial_files(out)
    writer = ShardWriter(out, len(items), shard_size)
    num_shards = writer.shard_of(len(items) - 1) + 1
    done = completed_shards(out) & set(range(num_shards))
    pending = [item for item in items if writer.shard_of(item.index) not in done]
    if not pending:
        records = iter(())
    elif engine == "local":
        records = run_local(pending, settings, identity, batch_size)
    else:
        records = run_ray(pending, settings, identity, batch_size, ray_options or RayOptions())
    bar = tqdm(total=len(items), initial=len(items) - len(pending), unit="item", desc="label", file=sys.stderr,
               disable=not progress or engine == "ray")  # Ray reports its own progress
    first_item = None  # when the first item came out: the engine's start-up (model loads, a cluster's planning)
    with bar:
        for record in records:
            first_item = first_item or time.monotonic()
            writer.add(record)
            bar.update()
    if writer.pending:
        raise RuntimeError(f"the engine stopped with shards {sorted(writer.pending)} incomplete")
    shards = range(num_shards)
    write_errors(out, shards)
    outputs = ["shards/", "items/", "errors.jsonl"]
    if output_format == "coco":
        outputs.append(write_coco(out, shards).name)
    elif output_format == "saco":
        outputs.append(write_saco(out, shards).name)
    counts = count_outputs(out, shards)
    seconds = time.monotonic() - started
    summary = LabelSummary(out, counts, num_shards, len(done), len(pending), seconds)
    write_json_atomic(out / "manifest.json", {
        "tool": f"conceptseg label {conceptseg.__version__}",
        "model": {"name": identity[0], "version": identity[1]},
        "plan": plan,
        "run": {"engine": engine, "batch_size": batch_size, "format": output_format,
                "ray": dataclasses.asdict(ray_options or RayOptions()) if engine == "ray" else None},
        "counts": counts,
        "shards": {"total": num_shards, "skipped_as_done": len(done), "size": shard_size},
        "timings": _timings(started, first_item, len(pending)),
        "outputs": outputs + ["manifest.json", "plan.json"],
    })
    return summary


def _timings(started: float, first_item: float | None, items: int) -> dict:
    """This run's wall time, items per second end to end, and after the first item (the steady rate)."""
    ended = time.monotonic()
    timings = {"seconds": round(ended - started, 3), "items_this_run": items,
               "items_per_second": round(items / (ended - started), 3)}
    if first_item is not None and items > 1:
        timings |= {"first_item_seconds": round(first_item - started, 3),
                    "steady_items_per_second": round((items - 1) / max(ended - first_item, 1e-9), 3)}
    return timings


def _plan(items: list[Item], settings: LabelSettings, identity: tuple[str, str], shard_size: int) -> dict:
    """Everything that decides the output, and a digest of it."""
    listing = hashlib.sha256()
    for item in items:
        listing.update(json.dumps([item.path, item.kind, list(item.concepts)]).encode())
    decided = {
        "items": len(items), "items_digest": listing.hexdigest()[:16],
        "concepts": sorted({concept for item in items for concept in item.concepts}),
        "model": identity[0], "model_version": identity[1], "quantize": settings.quantize,
        "threshold": settings.threshold,
        "max_frames": settings.max_frames, "limits": dataclasses.asdict(settings.limits), "shard_size": shard_size,
    }
    decided["digest"] = hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:16]
    return decided


def _claim(out: Path, plan: dict) -> None:
    """Write the plan into a new output folder, or check that an existing one holds this plan's run."""
    path = out / "plan.json"
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("digest") != plan["digest"]:
            changed = sorted(k for k in plan if k != "digest" and previous.get(k) != plan[k])
            raise ValueError(f"{out} holds a run with other arguments or inputs ({', '.join(changed)} differ): "
                             "give another --out, or delete the folder to start again")
        return
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no labelling run (no plan.json): give an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, plan)

