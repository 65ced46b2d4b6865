"""How long the warm server's imports take in its order (scdpo.utils.warm_protocol.PRELOAD): the first
PRELOAD_FIRST before it listens, then the longest single import after it, which is the most a request waits
(docs/performance.md, "Warm starts"). Run it in a fresh process: a module imported already costs nothing.

    python benchmarks/warm_preload.py
"""

from __future__ import annotations

import time

from scdpo.utils.warm_protocol import PRELOAD, PRELOAD_FIRST
from scdpo.utils.warm_server import import_module


def main() -> None:
    seconds = {}
    for name in PRELOAD:
        start = time.perf_counter()
        import_module(name)
        seconds[name] = time.perf_counter() - start
    later = list(seconds.items())[PRELOAD_FIRST:]
    name, longest = max(later, key=lambda kv: kv[1])
    print(f"before listening ({PRELOAD_FIRST} modules): {sum(list(seconds.values())[:PRELOAD_FIRST]):.2f} s; "
          f"after ({len(later)}): {sum(v for _, v in later):.2f} s, the longest {name} {longest:.2f} s")


if __name__ == "__main__":
    main()
