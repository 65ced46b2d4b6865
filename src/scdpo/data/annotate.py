"""Add cost columns to an existing Pick-a-Pic-format parquet dataset (e.g. Pick-a-Pic itself).

Each parquet file (those ``datasets.load_dataset`` would load from the folder) is read in batches, ``jpg_0`` / ``jpg_1`` are decoded and scored by the cost
model, and the file is written to ``out`` (same relative path) with ``cost_0`` / ``cost_1`` added
(replaced if present), under a temporary name and renamed. ``out`` may be the input folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from scdpo.data.builder import Scorer, score_batched
from scdpo.utils.datasets import parquet_files
from scdpo.utils.io import atomic_path
from scdpo.world.records import PromptRecord

REQUIRED = ("caption", "jpg_0", "jpg_1")


def _decode(value, path: Path, row: int, column: str):
    from PIL import Image

    data = value.get("bytes") if isinstance(value, dict) else value  # a datasets Image feature is a struct
    if not data:
        raise ValueError(f"{path} row {row}: column {column} has no image bytes")
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as err:  # PIL raises several types for bad bytes
        raise ValueError(f"{path} row {row}: column {column} is not a readable image ({err})") from None
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def _score_images(cost_fn: Scorer, images: list[torch.Tensor], records, batch_size: int) -> list[float]:
    """Score images of possibly different sizes: resized to the scorer's ``image_size`` if it declares
    one, else batched by size (the scorer resizes)."""
    size = getattr(cost_fn, "image_size", None)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        images = [torch.nn.functional.interpolate(im[None], size=size, mode="bilinear", antialias=True,
                                                  align_corners=False)[0].clamp(0, 1) for im in images]
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    scores = [0.0] * len(images)
    for idx in groups.values():
        values = score_batched(cost_fn, torch.stack([images[i] for i in idx]), [records[i] for i in idx], batch_size, "cost")
        for i, v in zip(idx, values):
            scores[i] = v
    return scores


def annotate(dataset: str | Path, cost_fn: Scorer, out: str | Path, batch_size: int = 64) -> list[Path]:
    """Write every parquet file of ``dataset`` (a file or folder) to ``out`` with cost columns added."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    # resolved: `datasets` lists a folder's files as absolute paths, and a relative --dataset must
    # still contain them for relative_to below
    src, out = Path(dataset).expanduser().resolve(), Path(out)
    files = [f.resolve() for f in parquet_files(src)]
    for f in files:  # check every file before writing anything
        missing = [c for c in REQUIRED if c not in pq.read_schema(f).names]
        if missing:
            raise ValueError(f"{f} lacks column(s) {', '.join(missing)}; a Pick-a-Pic dataset needs {', '.join(REQUIRED)}")
    written = []
    for f in tqdm(files, desc="annotate", unit="file"):
        target = out / (f.name if src.is_file() else f.relative_to(src))
        pf, row = pq.ParquetFile(f), 0
        with atomic_path(target) as tmp:
            writer = None
            for batch in pf.iter_batches(batch_size=batch_size):
                table = pa.Table.from_batches([batch])
                table = table.drop_columns([c for c in ("cost_0", "cost_1") if c in table.column_names])
                records = [PromptRecord(prompt=c or "", source="annotate") for c in table.column("caption").to_pylist()]
                for side in (0, 1):
                    col = f"jpg_{side}"
                    images = [_decode(v, f, row + i, col) for i, v in enumerate(table.column(col).to_pylist())]
                    table = table.append_column(f"cost_{side}", pa.array(_score_images(cost_fn, images, records, batch_size),
                                                                        pa.float64()))
                row += table.num_rows
                writer = writer or pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table)
            if writer is None:  # no rows: keep the schema, with the new columns
                schema = pf.schema_arrow
                for name in ("cost_0", "cost_1"):
                    if name not in schema.names:
                        schema = schema.append(pa.field(name, pa.float64()))
                pq.write_table(schema.empty_table(), tmp)
            else:
                writer.close()
        written.append(target)
    return written
