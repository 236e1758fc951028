"""benchmarks/stage_times.py --breakdown's pieces: exclusive phase timing (a second counted once, in the innermost
phase, or in an opaque one such as validation) and the import report from `python -X importtime`."""

from __future__ import annotations

import sys
import time

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from stage_phases import Clock  # noqa: E402
from stage_times import top_imports  # noqa: E402


def test_a_second_counts_once_in_the_innermost_phase():
    clock = Clock()
    read = clock.timed("read", lambda: time.sleep(0.05))
    model = clock.timed("model", lambda: (time.sleep(0.05), read()))
    validate = clock.timed("validate", lambda: (read(), time.sleep(0.02)))
    model()
    validate()
    assert abs(clock.seconds["model"] - 0.05) < 0.03
    assert abs(clock.seconds["read"] - 0.05) < 0.03  # the read inside validation is validation's
    assert abs(clock.seconds["validate"] - 0.07) < 0.03
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
