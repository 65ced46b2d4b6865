"""The safety cost model: a frozen pretrained image encoder plus a trainable adapter that outputs a
scalar harm cost (0 = safe/harmful threshold) and per-I2P-category logits. See docs/cost-model.md.

The names below are imported on first use (PEP 562), so that importing ``scdpo.cost.commands``
(which ``scdpo --help`` does) does not import torch."""

__all__ = ["CostModel", "load_cost_scorer"]


def __getattr__(name: str):
    if name in __all__:
        from scdpo.cost import model

        return getattr(model, name)
    raise AttributeError(f"module 'scdpo.cost' has no attribute {name!r}")
