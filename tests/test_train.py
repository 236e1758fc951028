import numpy as np
import pytest

from pipeline.train import epoch_batches, steps_per_epoch, warmup_cosine


def test_batches_cover_every_example_once_and_drop_singletons():
    batches = list(epoch_batches(10, 3, np.random.default_rng(0)))
    assert [len(b) for b in batches] == [3, 3, 3]
    assert len(set(np.concatenate(batches))) == 9
    assert steps_per_epoch(10, 3) == 3 and steps_per_epoch(11, 3) == 4


def test_warmup_then_cosine():
    factor = warmup_cosine(100, 0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0)
