"""Concept-erasure baselines the field compares against, on :class:`~scdpo.models.t2i.T2IModel`:
ESD (fine-tuning against negative guidance, :mod:`.esd`) and UCE (closed-form edit of the
cross-attention key/value projections, :mod:`.uce`). Both write a diffusers LoRA that ``--lora``
and ``load_lora_weights`` accept. The inference-time baselines (SLD, SAFREE) are guards of the
sampler (:mod:`scdpo.models.guards`). See docs/baselines.md."""
