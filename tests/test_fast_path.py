"""The fast path (images from the decoded store, the pipeline's loop, fused AdamW) trains exactly as the plain loop
(benchmarks/baseline.py: images decoded from files at every step, plain AdamW) does: same loss curve."""

import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.config import ModelParams, TrainParams
from pipeline.data.store import ImageStore, StoredPixels, build_store
from pipeline.models.clip import create_model, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.runtime import Runtime
from pipeline.training.loop import train
from pipeline.training.stage1 import caption_alignment_loss, trained_parameters
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from baseline import plain_stage1  # noqa: E402

TINY = ModelParams(arch="fciq-tiny", pretrained="")
PARAMS = TrainParams(epochs=2, batch_size=4, lr=1e-3, warmup_fraction=0.2, temperature=0.05)
COLOURS = ["red", "blue", "green", "black", "white", "pink"]


def _problem(directory):
    """12 images, 6 captions (so rows with the same caption meet in a batch)."""
    rng = np.random.default_rng(0)
    paths, captions = [], []
    for i in range(12):
        path = directory / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
        captions.append(f"a {COLOURS[i % 6]} dress")
    tokens = tokenizer_for(TINY.arch)(captions)
    return paths, tokens, torch.from_numpy(pd.factorize(pd.Series(captions))[0])


def _fast_losses(directory, paths, tokens, caption_id, runtime: Runtime) -> list[float]:
    model = create_model(TINY, seed=0)
    build_store(paths, image_loader(preprocessing(model)), preprocessing(model), directory / "store", workers=1)
    store = ImageStore.open(directory / "store")
    step = caption_alignment_loss(runtime.prepare(model), StoredPixels(store, store.rows(paths), runtime.device),
                                  tokens, caption_id, runtime, PARAMS.temperature)
    losses = []

    def recorded(batch, rng, epoch):
        loss = step(batch, rng, epoch)
        losses.append(loss.item())
        return loss

    train([(trained_parameters(model), PARAMS.lr)], recorded, len(paths), PARAMS, 0, None, [model], runtime)
    return losses


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fast_path")
    paths, tokens, caption_id = _problem(directory)
    plain = plain_stage1(create_model(TINY, seed=0), paths, tokens, caption_id, PARAMS, 0, steps=6,
                         device=torch.device("cpu"))
    return directory, paths, tokens, caption_id, plain


def test_fast_path_gives_the_plain_loss_curve(problem):
    directory, paths, tokens, caption_id, plain = problem
    fast = _fast_losses(directory, paths, tokens, caption_id, Runtime(fused=True))
    assert len(fast) == len(plain) == 6
    np.testing.assert_allclose(fast, plain, rtol=1e-5)
    assert abs(plain[-1] - plain[0]) > 1e-3  # it trained: a curve, not a constant


def test_bf16_autocast_follows_the_fp32_curve_within_bf16_precision(problem):
    """bf16 keeps 8 bits of mantissa: the curve agrees to about a percent, not to fp32's noise."""
    directory, paths, tokens, caption_id, plain = problem
    fast = _fast_losses(directory, paths, tokens, caption_id, Runtime(precision="bf16", fused=True))
    np.testing.assert_allclose(fast, plain, rtol=3e-2)
    assert not np.allclose(fast, plain, rtol=1e-6)  # autocast really ran in bf16


def test_compiled_encoders_follow_the_plain_curve_and_keep_their_state_dict_keys(problem):
    """compute.compile: torch.compile of both encoders (inductor on the CPU too; about a minute here) changes the
    arithmetic's order at most, and checkpoints keep the uncompiled keys, so a compiled run's model loads anywhere."""
    directory, paths, tokens, caption_id, plain = problem
    fast = _fast_losses(directory, paths, tokens, caption_id, Runtime(compile=True, fused=True))
    np.testing.assert_allclose(fast, plain, rtol=1e-4)
    model = create_model(TINY, seed=0)
    keys = set(model.state_dict())
    Runtime(compile=True).prepare(model)
    assert set(model.state_dict()) == keys
