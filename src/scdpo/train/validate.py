"""Validation during training: a grid of fixed harmful and clean prompts, plus the EmojiWorld
judge's numbers on it when a judge is shipped."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

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
        self.records, self.steps = records, steps
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
        from scdpo.utils.grid import save_grid

        was_training = model.unet.training
        model.unet.eval()
        try:
            images = model.sample([r.prompt for r in self.records], list(range(len(self.records))),
                                  steps=self.steps, progress=False)
        finally:
            model.unet.train(was_training)
        if save:
            save_grid(images, path, captions=[r.prompt for r in self.records], columns=8)
        if self.judge is None:
            return {}
        from scdpo.eval.presence import judge_records

        summary = judge_records(self.judge.probabilities(images), self.records)
        return {k: v for k, v in summary.items() if isinstance(v, float)}
