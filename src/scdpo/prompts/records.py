"""Prompt records from a name: an EmojiWorld suite or a prompt file, the one way every command reads
prompts (generate, eval, build, cost pairs)."""

from __future__ import annotations

from scdpo.world.records import PromptRecord


def load_records(suite: str | None, prompts: str | None, limit: int | None = None,
                 suite_seed: int = 0) -> list[PromptRecord]:
    """Prompt records from a suite name (its draw ``suite_seed``) or a prompt file (one way to read
    prompts everywhere)."""
    if suite is not None:
        from scdpo.world.suites import get_suite

        records = get_suite(suite, n=limit, seed=suite_seed)
    else:
        from scdpo.prompts.sources import load_prompt_file

        records = load_prompt_file(prompts, limit=limit)
    if not records:
        raise ValueError(f"no prompts in {suite or prompts}")
    return records
