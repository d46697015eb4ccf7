"""Sharded, resumable output: items are cut into fixed shards by number; a shard is written once, atomically,
when its last item arrives, whatever order the engine delivers items in.

A shard is `shards/part-NNNNN.parquet` (one row per item, concept and instance, sorted by item, concept and
instance; the folder is one Parquet dataset) with `items/part-NNNNN.jsonl` (each item's size, or its error). The index file is
written first and the Parquet file last, each through a temporary file and a rename, so a shard is complete
exactly when its Parquet file exists: a rerun skips those shards and redoes the others, and no item is ever
written twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conceptseg.io.atomic import atomic_open, atomic_path

SHARDS_FOLDER = "shards"
ITEMS_FOLDER = "items"

SCHEMA = pa.schema([
    ("item", pa.string()),            # absolute path of the image or video
    ("item_index", pa.int64()),       # its number in the run
    ("kind", pa.string()),            # "image" or "video"
    ("concept", pa.string()),
    ("instance", pa.int32()),         # rank by score within (image, concept); a video's object id
    ("score", pa.float32()),          # image: detection score; video: mean over the masklet's frames
    ("box", pa.list_(pa.float32(), 4)),  # image: XYXY pixels, within the image; null for a video
    ("mask", pa.string()),            # image: COCO RLE counts (size is [height, width]); null for a video
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("frames", pa.list_(pa.int32())),  # video: the frame indices where the object is visible, else null
    ("frame_masks", pa.list_(pa.string())),  # RLE counts per listed frame
    ("frame_boxes", pa.list_(pa.list_(pa.float32(), 4))),
    ("frame_scores", pa.list_(pa.float32())),
    ("model", pa.string()),
    ("model_version", pa.string()),
])


def shard_path(out: Path, shard: int) -> Path:
    return out / SHARDS_FOLDER / f"part-{shard:05d}.parquet"


def index_path(out: Path, shard: int) -> Path:
    return out / ITEMS_FOLDER / f"part-{shard:05d}.jsonl"


def completed_shards(out: Path) -> set[int]:
    """Numbers of the shards whose Parquet file exists."""
    folder = out / SHARDS_FOLDER
    return {int(path.stem.split("-")[1]) for path in folder.glob("part-*.parquet")} if folder.exists() else set()


def remove_partial_files(out: Path) -> None:
    """Temporary files a killed run left behind (hidden, beside the files they were to replace)."""
    for folder in (out / SHARDS_FOLDER, out / ITEMS_FOLDER):
        for path in folder.glob(".part-*.tmp"):
            path.unlink(missing_ok=True)


class ShardWriter:
    """Collects encoded items and writes each shard when it is whole; holds only unfinished shards' items."""

    def __init__(self, out: Path, num_items: int, shard_size: int):
        self.out = out
        self.num_items = num_items
        self.shard_size = shard_size
        self.pending: dict[int, dict[int, dict]] = {}
        (out / SHARDS_FOLDER).mkdir(parents=True, exist_ok=True)
        (out / ITEMS_FOLDER).mkdir(exist_ok=True)

    def shard_of(self, index: int) -> int:
        return index // self.shard_size

    def shard_items(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_items))

    def add(self, record: dict) -> int | None:
        """Keep one encoded item (a repeat of an item already held replaces it); returns the shard number
        when this item completed and wrote its shard."""
        shard = self.shard_of(record["index"])
        items = self.pending.setdefault(shard, {})
        items[record["index"]] = record
        if len(items) < len(self.shard_items(shard)):
            return None
        self._write(shard, [items[index] for index in self.shard_items(shard)])
        del self.pending[shard]
        return shard

    def _write(self, shard: int, records: list[dict]) -> None:
        with atomic_open(index_path(self.out, shard)) as handle:
            for record in records:
                handle.write(json.dumps(item_entry(record)) + "\n")
        rows = [row for record in records for row in record["rows"]]
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        with atomic_path(shard_path(self.out, shard)) as temporary:
            pq.write_table(table, temporary)


def item_entry(record: dict) -> dict:
    """What the shard index keeps of an item: its identity, size and concepts, or its error."""
    keys = ("index", "path", "kind", "concepts", "height", "width", "num_frames", "error")
    entry = {key: record.get(key) for key in keys}
    entry["concepts"] = list(entry["concepts"])
    entry["instances"] = len(record.get("rows", ()))
    return entry


def iter_item_entries(out: Path, shards: range) -> Iterator[dict]:
    """Every item entry of the given shards, in item order."""
    for shard in shards:
        with open(index_path(out, shard)) as handle:
            for line in handle:
                yield json.loads(line)


def iter_rows(out: Path, shards: range, columns: list[str] | None = None) -> Iterator[dict]:
    """Every output row of the given shards (only `columns`, if given), one shard in memory at a time."""
    for shard in shards:
        yield from pq.read_table(shard_path(out, shard), columns=columns, schema=SCHEMA).to_pylist()
