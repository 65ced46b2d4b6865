"""Validation during training: a grid of fixed harmful and clean prompts, plus the EmojiWorld
judge's numbers on it when a judge is shipped."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from scdpo.models.sampler_config import SamplerConfig
from scdpo.models.t2i import T2IModel
from scdpo.world.records import PromptRecord

log = logging.getLogger(__name__)


def validation_records(prompts: list[str] | None, n: int) -> list[PromptRecord]:
    """The fixed validation prompts: ``prompts`` as given, else ``n`` EmojiWorld prompts of
    eval-harmful-explicit followed by ``n`` of eval-clean."""
    if prompts:
        return [PromptRecord(prompt=p, source="config") for p in prompts]
    from scdpo.world.suites import get_suite

    return get_suite("eval-harmful-explicit", n=n) + get_suite("eval-clean", n=n)


class Validator:
    """Samples the fixed prompts with fixed seeds (so grids of different steps are comparable)."""

    def __init__(self, records: list[PromptRecord], steps: int, use_judge: bool, device):
        self.records = records
        self.config = SamplerConfig(steps=steps, progress=False)
        self.judge = None
        if use_judge:
            from scdpo.world.judge import load_default_judge

            try:
                self.judge = load_default_judge(device)
            except FileNotFoundError as err:
                log.warning("validation without judge numbers: %s", err)

    @torch.no_grad()
    def __call__(self, model: T2IModel, path: Path, save: bool = True) -> dict:
        """Sample, write the grid to ``path`` (if ``save``) and return the judge's numbers (or {})."""
        images = self._images(model, [r.prompt for r in self.records], list(range(len(self.records))), self.config)
        if save:
            self._save(images, path)
        return self._judge(images)[0]

    @torch.no_grad()
    def many(self, model: T2IModel, layout, paths: list[Path], save: bool = True) -> list[dict]:
        """:meth:`__call__` for every run of a UNet stacked by :func:`scdpo.train.stacked.stack` (run k's
        grid to ``paths[k]``), in one sampler call: R calls of a few prompts each wait on their launches."""
        from scdpo.models.sampling import batch_sizes
        from scdpo.train import stacked

        runs, n, cfg = len(paths), len(self.records), self.config
        layers = [m for m in model.unet.modules() if isinstance(m, stacked.StackedLoRA)]
        if not layers:
            raise ValueError("Validator.many: this UNet holds no stacked LoRA layers (stacked.stack); validate it "
                             "with Validator.__call__")
        if any(m.layout is not layout for m in layers):
            raise ValueError("Validator.many: the layout is not the one this UNet's stacked LoRA layers read; pass "
                             "the Layout that stacked.stack returned")
        if {len(m.lora_A) for m in layers} != {runs}:
            raise ValueError(f"Validator.many: {runs} grid paths for a UNet holding {len(layers[0].lora_A)} runs' "
                             "adapters; give one path per run")
        if cfg.guard is not None:  # a guard's conditionings are not [uncond; cond], so not the layout's blocks
            raise ValueError(f"Validator.many: guard {cfg.guard!r} changes the sampler's rows; validate each run "
                             "alone (Validator.__call__)")
        # the whole batch in one UNet call (a split would break the run-major rows), decoded as one run's would be
        _, vae = batch_sizes(model, cfg)
        neg = cfg.negative_prompt
        cfg = replace(cfg, batch_size=runs * n, vae_batch_size=vae,
                      negative_prompt=neg * runs if isinstance(neg, list) else neg)
        blocks = 2 if cfg.guidance_scale > 1.0 else 1  # _sample's test: guided rows are [uncond; cond]
        with stacked.rows_per_run(layout, rows=n, blocks=blocks):
            # every run gets the seeds it gets alone: its images are its lone grid's but for rounding
            images = self._images(model, [r.prompt for r in self.records] * runs, list(range(n)) * runs, cfg)
        images = images.split(n)
        if save:
            for grid, path in zip(images, paths):
                self._save(grid, path)
        return self._judge(*images)

    @staticmethod
    def _images(model: T2IModel, prompts: list[str], seeds: list[int], config: SamplerConfig) -> torch.Tensor:
        was_training = model.unet.training
        model.unet.eval()
        try:
            return model.sample(prompts, seeds, config)
        finally:
            model.unet.train(was_training)

    def _save(self, images: torch.Tensor, path: Path) -> None:
        from scdpo.utils.grid import save_grid

        save_grid(images, path, captions=[r.prompt for r in self.records], columns=8)

    def _judge(self, *grids: torch.Tensor) -> list[dict]:
        """The judge's numbers of each grid (one judge call for all), or {} each without a judge."""
        if self.judge is None:
            return [{} for _ in grids]
        from scdpo.eval.presence import judge_records

        probs = self.judge.probabilities(torch.cat(grids)).split(len(self.records))
        summaries = [judge_records(p, self.records) for p in probs]
        return [{k: v for k, v in s.items() if isinstance(v, float)} for s in summaries]
