"""The one training loop both stages use: AdamW, linear warm-up then cosine decay, DVCLive curves.

A stage supplies what differs (which parameters train, how a batch of indices becomes a loss, what to validate
after each epoch); the loop owns everything else, so the two stages cannot drift apart in optimiser details.
On a GPU the hot loop never waits for the host: the loss stays on the device until the epoch ends, the optimizer
is fused, the forward pass runs under the runtime's autocast (the text tower reads back one number per batch, its
longest caption's length: pipeline/models/retrieval.py). Under torchrun every rank runs this loop on the same
global batches; only the main rank logs and validates.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dvclive import Live
from pipeline.config import TrainParams
from pipeline.runtime import Runtime
from pipeline.training.resume import EpochCheckpoint


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled batches of row indices; a last batch of one row is dropped (a contrastive loss needs two)."""
    order = rng.permutation(n)
    for start in range(0, n, batch_size):
        batch = order[start:start + batch_size]
        if len(batch) >= 2:
            yield batch


def steps_per_epoch(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    warmup = int(total_steps * warmup_fraction)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


ParameterGroup = tuple[list[nn.Parameter], float]  # parameters and their peak learning rate
BatchLoss = Callable[[np.ndarray, np.random.Generator, int], torch.Tensor]  # (indices, rng, epoch) -> loss


def make_optimizer(groups: list[ParameterGroup], params: TrainParams, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on biases, norms, embeddings' scales), one lr per group;
    `fused` is one kernel for all parameters (the GPU default; the same update up to floating-point noise)."""
    param_groups = []
    for parameters, lr in groups:
        for decay in (True, False):
            chosen = [p for p in parameters if (p.ndim >= 2) == decay]
            if chosen:
                param_groups.append({"params": chosen, "weight_decay": params.weight_decay if decay else 0.0,
                                     "lr": lr})
    return torch.optim.AdamW(param_groups, fused=fused or None)


def open_live(directory: str | Path) -> Live:
    """DVCLive writing curves under `directory`; DVC (not DVCLive) owns dvc.yaml and experiments."""
    return Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)


def train(
    groups: list[ParameterGroup],
    batch_loss: BatchLoss,
    n_examples: int,
    params: TrainParams,
    seed: int,
    live: Live | None,
    modules: list[nn.Module],
    runtime: Runtime = Runtime(),
    validate: Callable[[], dict[str, float]] | None = None,
    desc: str = "train",
    checkpoint: EpochCheckpoint | None = None,
    stateful: dict[str, Any] | None = None,
) -> None:
    """Train `groups` for params.epochs over `n_examples` examples; `batch_loss(indices, rng, epoch)` computes one
    step's loss. Every group follows the same warm-up and cosine schedule, scaled to its own peak lr. `live` is None
    on the ranks that do not log. `modules` are the RetrievalModels trained (train/eval mode). With a `checkpoint`,
    every finished epoch is saved there with `stateful` (objects with state_dict and load_state_dict: the model,
    anything else an epoch changes), and a run that finds one continues after its epoch exactly as if it had never
    stopped (pipeline/training/resume.py)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    if live is not None:
        Path(live.plots_dir).mkdir(parents=True, exist_ok=True)  # a declared output even when epochs is 0
    optimizer = make_optimizer(groups, params, fused=runtime.fused_optimizer)
    parameters = [p for group, _ in groups for p in group]
    total = params.epochs * steps_per_epoch(n_examples, params.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, params.warmup_fraction))
    done = 0
    stateful, history, first = stateful or {}, [], 0
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        first, done, history = restore(saved, stateful, optimizer, schedule, rng, runtime)
        for metrics in history if live is not None else []:  # the curves of the epochs already trained
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()
        if runtime.world.is_main:
            print(f"{desc}: resuming after epoch {first} of {params.epochs} ({checkpoint.directory})",
                  file=sys.stderr, flush=True)
    for epoch in range(first, params.epochs):
        for module in modules:
            module.train()
        losses = []
        progress = tqdm(epoch_batches(n_examples, params.batch_size, rng), desc=f"{desc} epoch {epoch + 1}",
                        total=steps_per_epoch(n_examples, params.batch_size), unit="step", mininterval=2,
                        disable=not runtime.world.is_main)
        for batch in progress:
            with runtime.autocast():
                loss = batch_loss(batch, rng, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.detach())
            done += 1
        if live is not None:
            metrics = {"train/loss": float(torch.stack(losses).mean()), "train/lr": schedule.get_last_lr()[0]}
            if validate is not None:
                for module in modules:
                    module.eval()
                metrics.update(validate())
            for name, value in metrics.items():
                live.log_metric(name, value)
            live.next_step()
            history.append(metrics)
        if checkpoint is not None and runtime.world.is_main:
            checkpoint.save(epoch_state(epoch + 1, done, history, stateful, optimizer, schedule, rng))


def epoch_state(epoch: int, done: int, history: list[dict[str, float]], stateful: dict[str, Any],
                optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
                rng: np.random.Generator) -> dict[str, Any]:
    """Everything the next epoch depends on, as a run that never stopped would have it."""
    return {"epoch": epoch, "done": done, "history": history,
            "stateful": {name: obj.state_dict() for name, obj in stateful.items()},
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore(state: dict[str, Any], stateful: dict[str, Any], optimizer: torch.optim.Optimizer,
            schedule: torch.optim.lr_scheduler.LRScheduler, rng: np.random.Generator, runtime: Runtime
            ) -> tuple[int, int, list[dict[str, float]]]:
    """Put a saved epoch state back; the epoch to continue from, the steps done and the metrics logged so far."""
    for name, obj in stateful.items():
        obj.load_state_dict(state["stateful"][name])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    rng.bit_generator.state = state["rng"]
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and runtime.device.type == "cuda":
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["epoch"]), int(state["done"]), list(state["history"])
