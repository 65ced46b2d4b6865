"""Safety-constrained preference pairs for SC-DPO: `scdpo data build` and `scdpo data annotate`.
See docs/dataset-builder.md."""
