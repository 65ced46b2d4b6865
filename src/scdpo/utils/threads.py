"""How many CPU threads every `scdpo` command uses (``scdpo --threads N COMMAND`` or ``COMMAND --threads N``).

PyTorch and OpenBLAS start one thread per core. On a machine whose cores other jobs also use, those
threads wait on each other at every parallel region: on the project's shared 2-core CPU, 8
EmojiWorld images took 316 s with torch's default threads and 71 s with one (issue 23; our own
measurement is in BENCHMARKS.md, "CPU threads"). One thread is the default; on a machine of your
own with idle cores, ``--threads`` raises it.
"""

from __future__ import annotations

import os

#: measured on the shared 2-core CPU (BENCHMARKS.md, "CPU threads"): never more than a little slower
#: than two threads when the machine is idle, several times faster when another process is busy
DEFAULT_THREADS = 1
#: read by OpenMP (torch's CPU kernels), MKL, OpenBLAS and numexpr in this process's children
#: (accelerate launch, DataLoader workers)
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set (a user's or a launcher's explicit choice), else :data:`DEFAULT_THREADS`."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_THREADS


def set_threads(n: int) -> int:
    """Use ``n`` CPU threads from now on: torch's intra-op pool, the BLAS libraries loaded in this
    process (threadpoolctl), and the environment of any process started from here. Returns ``n``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {n!r}")
    for var in ENV_VARS:
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it only torch and children are limited
        return n
    threadpool_limits(n)  # not as a context: the limit stays for the rest of the command
    return n
