"""Where a Hugging Face-style parquet dataset keeps its rows."""

from __future__ import annotations

from pathlib import Path


def parquet_files(path: str | Path) -> list[Path]:
    """A .parquet file, or the train split's parquet files of a folder as ``datasets.load_dataset``
    resolves them (so a builder folder's ``data/train-*.parquet`` count and its ``choices.parquet``
    does not)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    path = Path(path).expanduser()
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset at {path}")
    try:
        found = DataFilesDict.from_patterns(get_data_patterns(str(path)), base_path=str(path))
    except EmptyDatasetError:
        found = {}
    split = found.get("train") or [f for files in found.values() for f in files]
    files = sorted({Path(f) for f in split if str(f).endswith(".parquet")})
    if not files:
        raise FileNotFoundError(f"no .parquet files of a train split under {path}")
    return files
