"""Inference-time safety guards of the sampler: one signature, one registry.

A guard changes how :func:`scdpo.models.sampling.sample_images` turns UNet predictions into a
denoising direction, or which text conditioning the UNet sees at each step. The sampler takes it
by name (``SamplerConfig.guard``, ``--guard`` of ``generate``, ``eval`` and ``data build``):

    get_guard("sld:medium")        # Safe Latent Diffusion, preset weak|medium|strong|max
    get_guard("sld:max,warmup=0.1") # a preset with one hyper-parameter replaced
    get_guard("safree")            # SAFREE: projection + self-validating filter
    get_guard("safree", concepts=["gun", "blood"])  # another unsafe-concept list

A spec is ``NAME[:OPT,OPT...]``; an OPT is a preset word or ``key=value`` (see each guard's
``from_options``). Every guard is a :class:`~scdpo.models.guards.base.Guard`. docs/baselines.md has the
equations and where each differs from its paper.
"""

from __future__ import annotations

from scdpo.models.guards.base import Guard, GuardRun, default_concepts
from scdpo.models.guards.safree import Safree
from scdpo.models.guards.sld import SafeLatentDiffusion

#: guard name -> class; each class has ``from_options(options: list[str], concepts) -> Guard``
GUARDS: dict[str, type[Guard]] = {"sld": SafeLatentDiffusion, "safree": Safree}

__all__ = ["GUARDS", "Guard", "GuardRun", "default_concepts", "get_guard", "parse_guard_spec"]


def parse_guard_spec(spec: str) -> tuple[str, list[str]]:
    """``"sld:medium,warmup=0.2"`` -> ``("sld", ["medium", "warmup=0.2"])``; ValueError if unknown."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in GUARDS:
        raise ValueError(f"unknown guard {spec!r}; choose one of: sld:weak|medium|strong|max, safree")
    return name, [o.strip() for o in rest.split(",") if o.strip()]


def get_guard(spec: str | Guard | None, concepts: list[str] | None = None) -> Guard | None:
    """The guard a spec names (None for None or "none"); a Guard passes through. ``concepts``: the
    unsafe concepts to steer away from (default: :func:`default_concepts` of the model)."""
    if spec is None or isinstance(spec, Guard):
        return spec
    if spec.strip().lower() in ("", "none"):
        return None
    name, options = parse_guard_spec(spec)
    return GUARDS[name].from_options(options, concepts)
