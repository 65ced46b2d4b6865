"""scdpo.utils.phases: wall seconds by phase, blocks apart from the marks between them."""

import time

from scdpo.utils.phases import Phases


def test_blocks_and_marks_split_the_time():
    phases = Phases()
    time.sleep(0.02)
    phases.mark("setup")
    for _ in range(2):
        time.sleep(0.01)
        with phases("validation"):
            time.sleep(0.03)
    phases.mark("steps")  # the loop's time less its blocks'
    s = phases.seconds
    assert list(s) == ["setup", "validation", "steps"]
    assert 0.02 <= s["setup"] < 0.2 and 0.06 <= s["validation"] < 0.3 and 0.02 <= s["steps"] < 0.06 + 0.1
    assert phases.rounded() == {k: round(v, 2) for k, v in s.items()}
