"""`compute.compile: auto`: never on the CPU (the committed CPU runs keep their arithmetic); on CUDA a training loop
compiles once the eager steps it timed show that the steps left would save more than compiling costs."""

from __future__ import annotations

import time

import torch

from pipeline.config import ComputeParams
from pipeline.runtime import COMPILE_SECONDS, COMPILE_SPEEDUP, Runtime
from pipeline.training import loop
from pipeline.training.loop import PROBE, AutoCompile


def test_auto_never_compiles_on_the_cpu(monkeypatch):
    monkeypatch.setenv("FASHION_CIR_DEVICE", "cpu")
    runtime = Runtime.start(ComputeParams(compile="auto"))
    assert runtime.compile is False
    assert not runtime.compile_repays(10**9, 1.0)
    assert Runtime.start(ComputeParams(compile=True)).compile is True


def test_auto_compiles_when_the_steps_left_repay_it():
    gpu = Runtime(torch.device("cuda"), compile="auto")
    break_even = COMPILE_SECONDS / (1 - 1 / COMPILE_SPEEDUP)  # eager seconds left at which compiling pays
    assert gpu.compile_repays(1000, 1.01 * break_even / 1000)
    assert not gpu.compile_repays(1000, 0.99 * break_even / 1000)
    assert not Runtime(torch.device("cuda"), compile=False).compile_repays(10**9, 1.0)


def test_the_loop_times_its_probe_steps_then_compiles_once(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(loop, "compile_encoders", compiled.append)
    model = torch.nn.Linear(2, 2)
    for steps_left, expected in ((10**7, [model]), (1, [])):
        compiled.clear()
        auto = AutoCompile(Runtime(torch.device("cuda"), compile="auto"), [model])
        for step in range(1, PROBE[1] + 3):
            time.sleep(0.002)
            auto.after_step(step, steps_left)
        assert compiled == expected
        assert not auto.active  # decided once, for the whole run
