"""Pick-a-Pic-format preference pairs for the trainer, and a resumable, sharded data order.

Columns (Kirstain et al. 2023): ``caption``, ``jpg_0`` and ``jpg_1`` (encoded PNG/JPEG bytes,
or a ``datasets.Image`` feature) and ``label_0`` (1 = jpg_0 preferred, 0 = jpg_1, 0.5 = tie).
Optional: ``cost_0``/``cost_1`` (safety costs, needed by sc-dpo), ``kind`` ("harmful"/"clean",
needed by safetydpo), ``category``, ``reward_0``/``reward_1``.  Ties carry no preference and are
dropped (diffusers' script keeps them, a known defect).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from scdpo.utils.datasets import parquet_files

log = logging.getLogger(__name__)
REQUIRED = ("caption", "jpg_0", "jpg_1", "label_0")


def _image_bytes(value, where: str) -> bytes:
    if isinstance(value, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if value.get("bytes") is None and value.get("path"):
            return Path(value["path"]).read_bytes()
        value = value.get("bytes")
    if not isinstance(value, (bytes, bytearray)):
        raise ValueError(f"{where} is not encoded image bytes (got {type(value).__name__})")
    return bytes(value)


def decode_image(data: bytes, resolution: int, resize: bool, where: str) -> torch.Tensor:
    """Encoded image -> (3, R, R) float in [-1, 1]; another size is an error unless ``resize``
    (then the shorter side is resized to R and the centre cropped)."""
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as err:  # PIL raises several types for corrupt data
        raise ValueError(f"{where} could not be decoded as an image: {err}") from err
    if img.size != (resolution, resolution):
        if not resize:
            raise ValueError(f"{where} is {img.size[0]}x{img.size[1]} pixels but the model works at "
                             f"{resolution}x{resolution}; pass --resize to resize and centre-crop")
        scale = resolution / min(img.size)
        img = img.resize((max(resolution, round(img.size[0] * scale)), max(resolution, round(img.size[1] * scale))),
                         Image.BICUBIC)
        left, top = (img.size[0] - resolution) // 2, (img.size[1] - resolution) // 2
        img = img.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    return arr.float() / 127.5 - 1


class PreferencePairs(torch.utils.data.Dataset):
    """Winner/loser pairs of a Pick-a-Pic-format dataset (ties and filtered kinds dropped).

    Item ``i``: ``index`` (i), ``caption``, ``image_w``/``image_l`` ((3, R, R) in [-1, 1], unless
    ``decode=False``), ``cost_w``/``cost_l`` (NaN when the dataset has no costs), ``harmful``,
    ``safe_caption`` (the prompt's safe counterpart from the optional column of that name, "" when
    none; read by the safe anchor). ``rows[i]`` is the dataset row of pair i (what error messages name).
    ``reward_min[i]``: the lower of the pair's two rewards (NaN without ``reward_0``/``reward_1``; read
    by the hold's focus, ``anchor_clean_focus``); ``hold_weight[i]`` its weight in the on-policy hold
    (1 unless the trainer sets it; item ``hold_weight``).
    """

    def __init__(self, path: str | Path, resolution: int, *, need_costs: bool = False,
                 kinds: tuple[str, ...] | None = None, resize: bool = False, decode: bool = True,
                 need_safe: bool = False, need_rewards: bool = False):
        import datasets

        self.path, self.resolution, self.resize, self.decode = str(path), resolution, resize, decode
        files = parquet_files(path)
        if not sum(pq.read_metadata(f).num_rows for f in files):  # datasets fails cryptically on 0 rows
            raise ValueError(f"dataset {self.path} has no rows (was every prompt skipped? see its README / "
                             "choices.parquet)")
        ds = datasets.Dataset.from_parquet([str(f) for f in files], split="train")
        cols = set(ds.column_names)
        needed = {n: "" for n in REQUIRED}
        if need_costs:
            needed.update(dict.fromkeys(("cost_0", "cost_1"), " (sc-dpo's cost margin and constraint read costs; "
                                        "use --loss dpo, or --cost-margin 0 --no-constraint)"))
        if kinds:
            needed["kind"] = " (safetydpo trains on the kind == harmful pairs only)"
        if need_safe:
            needed.update(dict.fromkeys(("kind", "safe_caption"), " (the safe anchor needs each harmful prompt's safe "
                                        "counterpart: rebuild the pairs with scdpo data build, or --anchor-weight 0)"))
        if need_rewards:
            needed.update(dict.fromkeys(("reward_0", "reward_1"), " (--anchor-clean-focus weights the hold by the "
                                        "pair's weaker reward: rebuild with scdpo data build, or --anchor-clean-focus 0)"))
        for name, why in needed.items():
            if name not in cols:
                raise ValueError(f"dataset {self.path} has no column {name!r}{why}; it has: {', '.join(sorted(cols))}")
        for name in ("jpg_0", "jpg_1"):
            if isinstance(ds.features[name], datasets.Image):  # keep the encoded bytes
                ds = ds.cast_column(name, datasets.Image(decode=False))
        self.ds = ds
        label = self._numbers("label_0")
        bad = np.flatnonzero(~np.isfinite(label) | (label < 0) | (label > 1))
        if len(bad):
            raise ValueError(f"dataset {self.path} row {bad[0]}: label_0 must be in [0, 1], got {label[bad[0]]}")
        keep = label != 0.5
        self.ties = int((~keep).sum())
        kind = self._column("kind").astype(str) if "kind" in cols else None
        self.filtered = 0
        if kinds:
            wanted = np.isin(kind, list(kinds))
            self.filtered = int((keep & ~wanted).sum())
            keep &= wanted
        self.rows = np.flatnonzero(keep)
        if not len(self.rows):
            raise ValueError(f"dataset {self.path} has no usable pairs ({len(label)} rows, {self.ties} ties, "
                             f"{self.filtered} not of kind {kinds})")
        swap = label[self.rows] < 0.5  # jpg_1 is the winner
        self.swap = swap
        nan = np.full(len(label), np.nan)
        c0 = self._numbers("cost_0") if "cost_0" in cols else nan
        c1 = self._numbers("cost_1") if "cost_1" in cols else nan
        if need_costs:
            for name, c in (("cost_0", c0), ("cost_1", c1)):
                bad = self.rows[~np.isfinite(c[self.rows])]
                if len(bad):
                    raise ValueError(f"dataset {self.path} row {bad[0]}: {name} is {c[bad[0]]}, costs must be finite")
        self.cost_w = np.where(swap, c1[self.rows], c0[self.rows]).astype(np.float32)
        self.cost_l = np.where(swap, c0[self.rows], c1[self.rows]).astype(np.float32)
        self.harmful = (kind[self.rows] == "harmful") if kind is not None else np.zeros(len(self.rows), bool)
        r0 = self._numbers("reward_0") if "reward_0" in cols else nan
        r1 = self._numbers("reward_1") if "reward_1" in cols else nan
        self.reward_min = np.minimum(r0[self.rows], r1[self.rows])
        # the on-policy hold's weight of each pair (the trainer sets it with anchor_clean_focus)
        self.hold_weight = np.ones(len(self.rows), dtype=np.float32)
        if need_rewards and not np.isfinite(self.reward_min[~self.harmful]).all():
            bad = self.rows[~self.harmful][~np.isfinite(self.reward_min[~self.harmful])][0]
            raise ValueError(f"dataset {self.path} row {bad}: reward_0/reward_1 must be finite on clean pairs "
                             "(--anchor-clean-focus ranks them)")
        self.captions = [str(c) for c in self._column("caption")[self.rows]]
        safe = self._column("safe_caption")[self.rows] if "safe_caption" in cols else [None] * len(self.rows)
        self.safe_captions = ["" if c is None else str(c) for c in safe]
        log.info("%s: %d pairs (%d ties dropped, %d filtered by kind)", self.path, len(self.rows), self.ties, self.filtered)

    def _column(self, name: str) -> np.ndarray:
        return np.asarray(self.ds.data.column(name).to_pylist(), dtype=object)

    def _numbers(self, name: str) -> np.ndarray:
        """A numeric column as float64, missing values as NaN (which the callers refuse)."""
        values = self._column(name)
        try:
            return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"dataset {self.path} column {name} must hold numbers: {err}") from err

    def __len__(self) -> int:
        return len(self.rows)

    def check_sizes(self) -> None:
        """Read every image header (not the pixels) and raise on the first of another size, so a
        bad dataset fails before training rather than hours in."""
        if self.resize:
            return
        want = (self.resolution, self.resolution)
        sub = self.ds.select(self.rows).select_columns(["jpg_0", "jpg_1"])
        for start, batch in zip(range(0, len(sub), 512), sub.iter(batch_size=512)):
            for name in ("jpg_0", "jpg_1"):
                for k, value in enumerate(batch[name]):
                    where = f"dataset {self.path} row {self.rows[start + k]} column {name}"
                    try:
                        size = Image.open(io.BytesIO(_image_bytes(value, where))).size
                    except ValueError:
                        raise
                    except Exception as err:
                        raise ValueError(f"{where} could not be decoded as an image: {err}") from err
                    if size != want:
                        raise ValueError(f"{where} is {size[0]}x{size[1]} pixels but the model works at "
                                         f"{want[0]}x{want[1]}; pass --resize to resize and centre-crop")

    def __getitem__(self, i: int) -> dict:
        item = {"index": int(i), "caption": self.captions[i], "cost_w": float(self.cost_w[i]),
                "cost_l": float(self.cost_l[i]), "harmful": bool(self.harmful[i]),
                "safe_caption": self.safe_captions[i], "hold_weight": float(self.hold_weight[i])}
        if self.decode:
            row = int(self.rows[i])
            rec = self.ds[row]
            images = []
            for name in ("jpg_1", "jpg_0") if self.swap[i] else ("jpg_0", "jpg_1"):
                where = f"dataset {self.path} row {row} column {name}"
                images.append(decode_image(_image_bytes(rec[name], where), self.resolution, self.resize, where))
            item["image_w"], item["image_l"] = images
        return item


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class StreamSampler:
    """Index batches for one process, from an endless stream of epochs shuffled by :func:`epoch_order`.

    Stream position ``s`` is pair ``epoch_order(n, seed, s // n)[s % n]``.  The ``k``-th global
    micro-batch covers positions ``start + k*G .. start + (k+1)*G - 1`` with ``G = batch_size *
    num_processes``, and process ``r`` takes its ``r``-th slice of ``batch_size``.  ``start`` is
    the number of pairs all processes consumed before, so resuming continues the same stream.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, start: int = 0, num_processes: int = 1,
                 process_index: int = 0):
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start
        self.num_processes, self.process_index = num_processes, process_index
        self._epoch, self._order = None, None

    def _at(self, pos: int) -> int:
        epoch, k = divmod(pos, self.n)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch)
        return int(self._order[k])

    def batch(self, k: int) -> list[int]:
        """This process's indices of the ``k``-th global micro-batch after ``start``."""
        first = self.start + (k * self.num_processes + self.process_index) * self.batch_size
        return [self._at(first + j) for j in range(self.batch_size)]

    def __iter__(self):
        k = 0
        while True:
            yield self.batch(k)
            k += 1
