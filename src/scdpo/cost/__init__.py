"""The safety cost model: a frozen pretrained image encoder plus a trainable adapter that outputs a
scalar harm cost (0 = safe/harmful threshold) and per-I2P-category logits. See docs/cost-model.md."""

from scdpo.cost.model import CostModel, load_cost_scorer

__all__ = ["CostModel", "load_cost_scorer"]
