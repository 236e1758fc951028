import numpy as np
import pytest

from pipeline.training.loop import epoch_batches, steps_per_epoch, warmup_cosine


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


def test_stage1_without_any_caption_stops_with_one_sentence(tmp_path):
    # CIRR with the catalog backend: no attribute tags, so every caption is empty.
    import pandas as pd

    from pipeline.config import Params, Stage1Params
    from pipeline.errors import PipelineError
    from pipeline.paths import Paths
    from pipeline.runtime import Runtime
    from pipeline.training.stage1 import train_stage1

    paths = Paths(tmp_path)
    paths.captions_dir.mkdir(parents=True)
    pd.DataFrame({"name": ["a", "b"], "category": ["cirr"] * 2, "split": ["train"] * 2, "path": ["x", "y"],
                  "caption": ["", ""]}).to_parquet(paths.captions)
    with pytest.raises(PipelineError, match="has no train image with a caption.*set stage1.epochs: 0"):
        train_stage1(Params(stage1=Stage1Params(epochs=1)), Runtime(), paths)
    assert not paths.stage1_dir.exists()
    train_stage1(Params(stage1=Stage1Params(epochs=0)), Runtime(), paths)  # no image store needed either
    assert (paths.stage1_dir / "model.pt").is_file()  # epochs 0: the base model is the checkpoint


def test_the_loop_tells_the_loss_which_epoch_it_is_in(tmp_path):
    # stage 2's coarse-to-hard curriculum (stage2.hard_negatives_from_epoch) keys on it.
    import torch

    from pipeline.config import TrainParams
    from pipeline.training.loop import open_live, train

    weight = torch.nn.Parameter(torch.ones(3))
    seen = []

    def batch_loss(batch, rng, epoch):
        seen.append(epoch)
        return (weight * torch.as_tensor(batch, dtype=torch.float32)).sum()

    with open_live(tmp_path / "live") as live:
        train([([weight], 0.1)], batch_loss, 6, TrainParams(epochs=3, batch_size=3), 0, live, [])
    assert seen == [0, 0, 1, 1, 2, 2]
