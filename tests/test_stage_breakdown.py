"""benchmarks/stage_times.py --breakdown's pieces: exclusive phase timing (a second counted once, in the innermost
phase, or in an opaque one such as validation) and the import report from `python -X importtime`."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from stage_phases import Clock  # noqa: E402
from stage_times import top_imports  # noqa: E402


def test_a_second_counts_once_in_the_innermost_phase():
    now = [0.0]

    def spend(seconds: float) -> None:  # work whose duration is known exactly: the clock's time moves by it
        now[0] += seconds

    clock = Clock(timer=lambda: now[0])
    read = clock.timed("read", lambda: spend(5))
    model = clock.timed("model", lambda: (spend(3), read(), spend(1)))
    validate = clock.timed("validate", lambda: (read(), spend(2)))
    spend(100)  # outside every phase: nobody's
    model()
    validate()
    assert dict(clock.seconds) == {"model": 4, "read": 5, "validate": 7}  # the read inside validation is its own
    assert not clock.stack


def test_imports_count_each_modules_own_time_to_its_package():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:      2000 |       2000 |       torch._C",
        "import time:    500000 |     502000 |     torch",
        "import time:    300000 |     300000 |       open_clip.tokenizer",
        "import time:    100000 |     902000 |   open_clip",
        "import time:     50000 |     952000 | pipeline.models.clip",
        "render:  50%|#####     | 1/2 [00:00<00:00]",
    ])
    assert top_imports(stderr) == [("torch", 0.502), ("open_clip", 0.4)]
