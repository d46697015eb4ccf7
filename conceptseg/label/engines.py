"""Engines run the stages (`conceptseg.label.stages`) over items and yield encoded records, in any order.

local: in this process, one model; the next batch is read in a thread while the model works on the current one.
ray:   Ray Data: read and encode as CPU tasks, the model as a pool of actors (one model each, `map_batches` with a
       callable class), streamed. A worker that dies is restarted by Ray and its batch retried (Ray Data's
       defaults for actor pools); the writer keeps one copy of each item, so nothing is lost or doubled.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from conceptseg.label.sources import Item
from conceptseg.label.stages import Labeller, LabelSettings, encode, read

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class RayOptions:
    """address: a running cluster ("auto" or HOST:PORT); None starts a local one on loopback, with as many
    logical CPUs as the workers take plus one, so that the read and encode tasks always find a CPU (on a
    2-core machine two actors holding every CPU would starve them). workers: model actors; worker_cpus: CPUs
    each asks for (and its torch threads); worker_gpus: GPUs each asks for (set for a CUDA device)."""

    address: str | None = None
    workers: int = 2
    worker_cpus: float = 1.0
    worker_gpus: float = 0.0


def item_record(item: Item) -> dict:
    return {**asdict(item), "concepts": list(item.concepts)}


def run_local(items: Sequence[Item], settings: LabelSettings, model_identity: tuple[str, str],
              batch_size: int) -> Iterator[dict]:
    labeller = Labeller(settings)
    batches = [[item_record(item) for item in items[i:i + batch_size]] for i in range(0, len(items), batch_size)]
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(read, batches[0], settings.limits) if batches else None
        for number in range(len(batches)):
            batch = upcoming.result()
            if number + 1 < len(batches):
                upcoming = reader.submit(read, batches[number + 1], settings.limits)
            yield from encode(labeller(batch), *model_identity)


def run_ray(items: Sequence[Item], settings: LabelSettings, model_identity: tuple[str, str], batch_size: int,
            options: RayOptions) -> Iterator[dict]:
    try:
        import ray
    except ImportError as error:
        raise ValueError("--engine ray needs Ray: pip install 'conceptseg[ray]'") from error
    started_here = not ray.is_initialized()
    if started_here:
        if options.address is None:
            cpus = int(np.ceil(options.workers * options.worker_cpus)) + 1
            ray.init(num_cpus=cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=options.address)
    try:
        worker_settings = replace(settings, threads=settings.threads or max(1, int(options.worker_cpus)))
        dataset = ray.data.from_items([{"record": pickle.dumps(item_record(item))} for item in items],
                                      override_num_blocks=max(1, -(-len(items) // batch_size)))
        dataset = dataset.map_batches(_read_batch, fn_kwargs={"limits": settings.limits}, batch_size=batch_size,
                                      batch_format="numpy", num_cpus=0.25)
        dataset = dataset.map_batches(
            RayLabeller, fn_constructor_kwargs={"settings": worker_settings}, batch_size=batch_size,
            batch_format="numpy", concurrency=options.workers, num_cpus=options.worker_cpus,
            num_gpus=options.worker_gpus,
        )
        dataset = dataset.map_batches(_encode_batch, fn_kwargs={"model_identity": model_identity},
                                      batch_size=batch_size, batch_format="numpy", num_cpus=0.25)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for blob in batch["record"]:
                yield pickle.loads(blob)
    finally:
        if started_here:
            ray.shutdown()


# Records cross Ray as pickled bytes in one binary column: Arrow would otherwise have to infer a schema for nested,
# partly empty Python values (and ndarrays) batch by batch.
def _records(batch: dict[str, np.ndarray]) -> list[dict]:
    return [pickle.loads(blob) for blob in batch["record"]]


def _batch(records: list[dict]) -> dict[str, np.ndarray]:
    blobs = np.empty(len(records), dtype=object)
    blobs[:] = [pickle.dumps(record, protocol=5) for record in records]
    return {"record": blobs}


def _read_batch(batch: dict[str, np.ndarray], limits) -> dict[str, np.ndarray]:
    return _batch(read(_records(batch), limits))


def _encode_batch(batch: dict[str, np.ndarray], model_identity: tuple[str, str]) -> dict[str, np.ndarray]:
    return _batch(encode(_records(batch), *model_identity))


class RayLabeller:
    """The model stage as a Ray actor: one `Labeller` (one model) per actor, for its lifetime."""

    def __init__(self, settings: LabelSettings):
        self.labeller = Labeller(settings)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _batch(self.labeller(_records(batch)))
