"""scdpo.utils.checkpoints.reset_accelerate_state: a second run in one process may ask accelerate for
another precision (train then world pretrain, tests, notebooks)."""

import pytest


def test_a_second_run_may_ask_another_precision():
    from accelerate import Accelerator

    from scdpo.utils.checkpoints import reset_accelerate_state

    reset_accelerate_state()
    Accelerator(cpu=True, mixed_precision="bf16")
    with pytest.raises(ValueError, match="already been initialized"):  # what accelerate does unaided
        Accelerator(cpu=True, mixed_precision="no")
    reset_accelerate_state()
    assert Accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    reset_accelerate_state()
