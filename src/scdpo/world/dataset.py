"""EmojiWorld as data: a torch Dataset that renders on the fly, and parquet export to disk."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from scdpo.utils.io import PNG_LEVEL, atomic_path
from scdpo.world.render import label_matrix, render_scenes
from scdpo.world.suites import get_suite_spec, suite_scenes


class EmojiWorldDataset(torch.utils.data.Dataset):
    """Scenes ``0 .. n-1`` of a suite, rendered when asked (no disk).

    Items are dicts ``{"image": (3, size, size) in [0, 1], "caption": str, "labels": (V,) multi-hot}``.
    For speed pass ``collate_fn=dataset.collate`` with ``batch_size``: the batch is rendered in one
    call instead of one image at a time.
    """

    def __init__(self, suite: str = "train", n: int | None = None, size: int = 64, seed: int = 0):
        get_suite_spec(suite)
        self.suite, self.size, self.seed = suite, size, seed
        self.n = get_suite_spec(suite).default_n if n is None else n

    def __len__(self) -> int:
        return self.n

    def scene(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return suite_scenes(self.suite, 1, self.seed, start=i)[0]

    def __getitem__(self, i: int) -> dict:
        return self._render([self.scene(i)])[0]

    def _render(self, scenes) -> list[dict]:
        imgs, labels = render_scenes(scenes, self.size), label_matrix(scenes)
        return [{"image": im, "caption": s.caption, "labels": lb} for im, s, lb in zip(imgs, scenes, labels)]

    def collate(self, indices: list[int]) -> dict:
        """A ``collate_fn`` for index batches (use with a ``DataLoader`` over ``range(len(ds))``)."""
        scenes = [self.scene(i) for i in indices]
        return {"image": render_scenes(scenes, self.size), "caption": [s.caption for s in scenes],
                "labels": label_matrix(scenes)}


def png_bytes(image: torch.Tensor) -> bytes:
    """A (3, H, W) tensor in [0, 1] as PNG bytes."""
    return png_bytes_many(image[None], threads=1)[0]


def png_bytes_many(images: torch.Tensor | list[torch.Tensor], threads: int | None = None,
                   level: int = PNG_LEVEL) -> list[bytes]:
    """PNG bytes of (N, 3, H, W) images in [0, 1], the same bytes as :func:`png_bytes` of each (at one level).

    The 8-bit conversion runs once for the batch, and the encoding (zlib ``level``: the commands' PNG_LEVEL,
    :mod:`scdpo.utils.io`) on ``threads`` threads (default: torch's intra-op threads, which every command
    sets from ``--threads``): Pillow's zlib encoder releases the GIL, so the threads run at once. One thread
    encoded 730 EmojiWorld images a second at Pillow's default level on the H200's host, slower than the GPU
    samples them at 1024 a batch (docs/performance.md, "Sampling batches")."""
    from concurrent.futures import ThreadPoolExecutor

    if isinstance(images, list):
        images = torch.stack(images) if images else torch.empty(0, 3, 1, 1)
    arr = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).contiguous().cpu().numpy()

    def encode(a) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG", compress_level=level)
        return buf.getvalue()

    threads = threads or torch.get_num_threads()
    if threads <= 1 or len(arr) < 2 * threads:
        return [encode(a) for a in arr]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(encode, arr))


def export_suite(suite: str, out: str | Path, n: int | None = None, size: int = 64, seed: int = 0,
                 shard_size: int = 1000, batch_size: int = 256) -> list[Path]:
    """Render a suite to ``out/shard-XXXXX.parquet`` (Hugging Face ``datasets`` loads the folder).

    Columns: ``image`` (PNG, a ``datasets.Image`` feature), ``caption``, ``concepts``,
    ``categories``, ``severity``, ``harmful``, ``boxes`` (pixels, JSON) and ``scene`` (JSON).
    Each shard is written under a temporary name and renamed, and existing shards are kept, so a
    killed export restarted with the same arguments resumes where it stopped.
    """
    from scdpo.utils.lock import folder_lock

    # every setting is checked before the first write, so a refused run leaves nothing that would
    # block the corrected one
    n = get_suite_spec(suite).default_n if n is None else n
    for name, value, low in [("--n", n, 0), ("--size", size, 16), ("--shard-size", shard_size, 1),
                             ("batch_size", batch_size, 1)]:
        if value < low:
            raise ValueError(f"{name} {value} is too small: it must be >= {low}")
    out = Path(out)
    with folder_lock(out, "scdpo world render"):
        return _export(suite, out, n, size, seed, shard_size, batch_size)


def _export(suite: str, out: Path, n: int, size: int, seed: int, shard_size: int, batch_size: int) -> list[Path]:
    import datasets

    # a resumed export must use the same settings, or shards of two datasets would mix
    settings = {"suite": suite, "n": n, "size": size, "seed": seed, "shard_size": shard_size}
    meta = out / ".export.json"  # hidden: datasets skips it when loading the folder
    if meta.exists() and json.loads(meta.read_text()) != settings:
        raise ValueError(f"{out} holds an export made with {meta.read_text().strip()}; "
                         f"use another --out or the same settings ({settings})")
    with atomic_path(meta) as tmp:
        tmp.write_text(json.dumps(settings))
    features = datasets.Features({
        "image": datasets.Image(), "caption": datasets.Value("string"),
        "concepts": datasets.Sequence(datasets.Value("string")),
        "categories": datasets.Sequence(datasets.Value("string")),
        "severity": datasets.Value("int32"), "harmful": datasets.Value("bool"),
        "boxes": datasets.Value("string"), "scene": datasets.Value("string"),
    })
    shards = []
    n_shards = -(-n // shard_size)
    bar = tqdm(total=n, desc=f"render {suite}", unit="img")
    for k in range(n_shards):
        path = out / f"shard-{k:05d}.parquet"
        lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
        shards.append(path)
        if path.exists():
            bar.update(hi - lo)
            continue
        rows = {name: [] for name in features}
        for b in range(lo, hi, batch_size):
            scenes = suite_scenes(suite, min(batch_size, hi - b), seed, start=b)
            for png, s in zip(png_bytes_many(render_scenes(scenes, size)), scenes):
                rows["image"].append({"bytes": png, "path": None})
                rows["caption"].append(s.caption)
                rows["concepts"].append(list(s.concepts))
                rows["categories"].append(list(s.harmful_categories))
                rows["severity"].append(s.severity)
                rows["harmful"].append(s.harmful)
                rows["boxes"].append(json.dumps(s.boxes_px(size)))
                rows["scene"].append(json.dumps(s.to_dict()))
            bar.update(len(scenes))
        with atomic_path(path) as tmp:
            datasets.Dataset.from_dict(rows, features=features).to_parquet(str(tmp))
    bar.close()
    return shards
