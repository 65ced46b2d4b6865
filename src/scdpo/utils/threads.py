"""How many CPU threads every `scdpo` command uses (``scdpo --threads N COMMAND`` or ``COMMAND --threads N``).

PyTorch and OpenBLAS start one thread per core. On a machine whose cores other jobs also use, those
threads wait on each other at every parallel region: on the project's shared 2-core CPU, 8
EmojiWorld images took 316 s with torch's default threads and 71 s with one (issue 23; our own
measurement is in BENCHMARKS.md, "CPU threads"). So the default is the cores that other work leaves
idle when the command starts (:func:`idle_cores`): every core on an idle machine, as torch would
take, one on a busy one, as measured to hold up under load.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: the fewest threads the default gives, however busy the machine
DEFAULT_THREADS = 1


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota (a
    container's ``--cpus``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def idle_cores(load: float | None = None, cores: int | None = None, machine: int | None = None) -> int:
    """The usable cores that the 1-minute load average leaves idle, at least :data:`DEFAULT_THREADS`:
    ``round(cores * (1 - load / machine))`` with ``machine`` the machine's cores (the load average counts
    all of them; where this process may use them all, ``cores - load``). Without a load average
    (Windows) every usable core, torch's own default. The arguments override what is read, for tests."""
    cores = usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores
    machine = max(os.cpu_count() or cores, cores) if machine is None else machine
    idle = cores * max(0.0, 1.0 - load / machine)
    return max(DEFAULT_THREADS, min(cores, math.floor(idle + 0.5)))


#: read by OpenMP (torch's CPU kernels), MKL, OpenBLAS and numexpr in this process's children
#: (accelerate launch, DataLoader workers)
ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when it is set (a user's or a launcher's explicit choice), else :func:`idle_cores`."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else idle_cores()


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
