"""Run one DVC stage's module with a timer on each phase of its work, and write where its seconds went as JSON.

    python benchmarks/stage_phases.py --out stage1.json -m stages.stage1

`benchmarks/stage_times.py --breakdown` puts this in place of `python` on DVC's PATH, so the stage runs as it does
in `dvc repro` (same process, same outputs) with timers around the functions that load, move, write, log and
validate. A second in time is counted once: a phase's seconds are its own, without the phases nested in it.

    start     interpreter start-up until this script runs (the PATH shim records when it started)
    imports   importing the stage's module: torch, open_clip, pandas, DVCLive... (stage_times names the largest)
    cuda      CUDA's lazy initialisation, wherever the stage first touches the GPU
    model     building, loading and preparing models (creation, checkpoint load, to the device, compile wrappers)
    read      reading inputs: Parquet tables, feature tables, the image store, its copy to the device
    write     writing outputs: checkpoints, feature tables, JSON and Parquet files
    validate  the training stages' validation after each epoch
    dvclive   DVCLive's set-up and logging
    compile   torch.compile's own time (dynamo's count), taken out of compute
    compute   the rest of the stage's `main`: training steps, rendering, decoding, encoding, search, ranking

Why not cProfile or torch.profiler: both time functions inside one interpreter once it is running. What a short DVC
stage loses is mostly outside that: interpreter start-up, imports, CUDA's lazy start, DVCLive, checkpoint writes.
This attributes every second of a stage's wall time, as DVC runs it, to one of these phases with nothing counted
twice, so stage_times.py can put DVC's own share, start-up and the stage's compute side by side for every stage
(benchmarks/RESULTS.md, "Where each stage's seconds go"); cProfile's overhead on the training loop would also inflate
the compute it is compared with.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

# (module, attribute path) -> phase. The wrappers replace the function wherever a loaded pipeline or stage module
# holds it, so `from pipeline.models.clip import load_checkpoint` is timed too.
TIMED = {
    ("pipeline.models.clip", "create_model"): "model",
    ("pipeline.models.clip", "load_checkpoint"): "model",
    ("pipeline.models.clip", "input_preprocessing"): "model",
    ("pipeline.runtime", "Runtime.prepare"): "model",
    ("pipeline.models.clip", "save_checkpoint"): "write",
    ("pipeline.data.store", "ImageStore.open"): "read",
    ("pipeline.data.store", "StoredPixels.__init__"): "read",
    ("pipeline.features.table", "read_features"): "read",
    ("pandas", "read_parquet"): "read",
    ("pipeline.features.table", "write_features"): "write",
    ("pipeline.io", "write_json"): "write",
    ("pipeline.io", "write_parquet"): "write",
    ("dvclive", "Live.__init__"): "dvclive",
    ("dvclive", "Live.log_metric"): "dvclive",
    ("dvclive", "Live.next_step"): "dvclive",
    ("dvclive", "Live.end"): "dvclive",
}
OPAQUE = {"validate", "dvclive"}  # phases that keep the time of what they call (validation reads and ranks)


class Clock:
    """Exclusive phase timing: the innermost running phase owns the time; an opaque phase owns all time inside."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.timer = timer
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list[Any]] = []  # [phase, started]

    def timed(self, phase: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if self.stack and self.stack[-1][0] in OPAQUE:
                return fn(*args, **kwargs)
            now = self.timer()
            if self.stack:
                self.seconds[self.stack[-1][0]] += now - self.stack[-1][1]
            self.stack.append([phase, now])
            try:
                return fn(*args, **kwargs)
            finally:
                name, started = self.stack.pop()
                now = self.timer()
                self.seconds[name] += now - started
                if self.stack:
                    self.stack[-1][1] = now

        wrapper.__wrapped__ = fn
        return wrapper


def _replace(original: Any, wrapper: Any) -> None:
    """Point every loaded pipeline or stage module's name for `original` at `wrapper`."""
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("pipeline", "stages")):
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, wrapper)


def install(clock: Clock) -> None:
    """Wrap the TIMED functions of the modules the stage imported, its training loop's `validate`, and CUDA's lazy
    initialisation (it happens on the first tensor sent to the GPU, wherever that is)."""
    for (module_name, path), phase in TIMED.items():
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner_path, _, attribute = path.rpartition(".")
        owner = module
        for part in filter(None, owner_path.split(".")):
            owner = getattr(owner, part)
        original = getattr(owner, attribute)
        wrapper = clock.timed(phase, original)
        setattr(owner, attribute, wrapper)
        if not owner_path:
            _replace(original, wrapper)
    loop = sys.modules.get("pipeline.training.loop")
    if loop is not None:
        train = loop.train

        def timed_train(*args, **kwargs):
            if kwargs.get("validate") is not None:
                kwargs["validate"] = clock.timed("validate", kwargs["validate"])
            return train(*args, **kwargs)

        _replace(train, timed_train)
    cuda = sys.modules.get("torch.cuda")
    if cuda is not None and not cuda.is_initialized():
        cuda._lazy_init = clock.timed("cuda", cuda._lazy_init)


def compile_seconds() -> float:
    """torch.compile's wall time in this process, by dynamo's own count (0 when nothing compiled)."""
    utils = sys.modules.get("torch._dynamo.utils")
    if utils is None:
        return 0.0
    return float(utils.calculate_time_spent().get("total_wall_time", 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="the JSON file to write")
    parser.add_argument("-m", dest="module", required=True, help="the stage module, e.g. stages.stage1")
    args = parser.parse_args()
    started = time.time()
    launched = float(os.environ.get("STAGE_PHASES_T0", started))
    sys.argv = [args.module]
    sys.path[0] = os.getcwd()  # as `python -m` has it: the stage imports `pipeline` from the checkout DVC runs in
    before = time.perf_counter()
    module = importlib.import_module(args.module)
    imports = time.perf_counter() - before
    from pipeline.errors import run_stage

    clock = Clock()
    install(clock)
    status = 0
    before = time.perf_counter()
    try:
        run_stage(module.main)
    except SystemExit as exit:
        status = exit.code if isinstance(exit.code, int) else 1
    finally:
        total = time.perf_counter() - before
        phases = dict(clock.seconds)
        phases["compile"] = compile_seconds()
        phases["compute"] = max(0.0, total - sum(phases.values()))
        record = {"module": args.module, "launched": launched, "ended": time.time(), "start": started - launched,
                  "imports": imports, "main": total, "status": status,
                  "phases": {name: round(seconds, 3) for name, seconds in phases.items()}}
        with open(args.out, "w") as handle:
            json.dump(record, handle, indent=1)
    sys.exit(status)


if __name__ == "__main__":
    main()
