from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.runtime import World
from pipeline.training import distributed
from pipeline.training.distributed import gather, launch, shard


def test_shards_cover_the_global_batch_in_order_with_equal_sizes():
    batch = np.array([7, 3, 9, 1, 4])
    for size in (1, 2, 3, 4, 5, 8):
        shards = [shard(World(rank, size), batch) for rank in range(size)]
        assert len({len(s) for s in shards}) == 1  # all_gather needs equal shapes
        assert np.concatenate(shards)[:len(batch)].tolist() == batch.tolist()


def test_one_process_gather_is_the_batch():
    local = torch.arange(12.0).view(6, 2)
    assert torch.equal(gather(World(), local, 5), local[:5])


def test_one_process_is_not_relaunched(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert launch(1, "stages.stage1") is False
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a torchrun process: never launch torchrun again
    assert launch(4, "stages.stage1") is False


def test_more_processes_than_gpus_is_one_sentence(monkeypatch):
    monkeypatch.setattr(distributed, "compute_device", lambda: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    message = "compute.processes = 2 asks for one process per GPU, but this machine has 1"
    with pytest.raises(PipelineError, match=message):
        distributed.run_distributed(SimpleNamespace(processes=2), "stages.stage1", lambda runtime: None)
