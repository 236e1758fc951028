"""Mining's exact torch search (the path a flat index takes where CUDA is present) finds the same neighbours as
FAISS's flat index: run here on the CPU, in small chunks so that the chunk merging is exercised, on random
features (no ties)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.negatives import hard
from pipeline.negatives.hard import exact_search_device, mine_hard_negatives


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(hard, "QUERY_CHUNK", 64)
    monkeypatch.setattr(hard, "GALLERY_CHUNK", 300)


@pytest.mark.parametrize("max_target_similarity", [1.0, 0.8])
def test_torch_search_finds_faiss_flats_neighbours(small_chunks, max_target_similarity):
    rng = np.random.default_rng(0)
    gallery = _unit(rng.normal(size=(1000, 24)))
    targets = rng.integers(0, len(gallery), size=200)
    queries = _unit(gallery[targets] + 0.4 * rng.normal(size=(200, 24)))
    groups = rng.integers(0, 400, size=len(gallery))  # answer groups of about 2.5 images
    faiss_found, faiss_scores = mine_hard_negatives(queries, gallery, targets, 16, "flat", max_target_similarity,
                                                    answer_groups=groups, device=None)
    found, scores = mine_hard_negatives(queries, gallery, targets, 16, "flat", max_target_similarity,
                                        answer_groups=groups, device=torch.device("cpu"))
    np.testing.assert_array_equal(found, faiss_found)
    np.testing.assert_allclose(scores, faiss_scores, atol=1e-5)
    assert (found >= 0).all()
    assert not (groups[found] == groups[targets][:, None]).any()


def test_fewer_candidates_than_k_are_padded_as_faiss_pads_them(small_chunks):
    gallery = _unit(np.random.default_rng(1).normal(size=(5, 4)))
    groups = np.array([0, 0, 1, 2, 2])
    found, scores = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), 4, "flat", answer_groups=groups,
                                        device=torch.device("cpu"))
    faiss_found, _ = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), 4, "flat", answer_groups=groups)
    assert found.tolist() == faiss_found.tolist()
    assert sorted(found[0, :3].tolist()) == [2, 3, 4] and found[0, 3] == -1 and np.isnan(scores[0, 3])


def test_exact_search_runs_on_cuda_for_a_flat_index_only(monkeypatch):
    monkeypatch.delenv("FASHION_CIR_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert exact_search_device("flat") == torch.device("cuda")
    assert exact_search_device("ivf") is None and exact_search_device("hnsw") is None
    monkeypatch.setenv("FASHION_CIR_DEVICE", "cpu")  # forcing the CPU keeps FAISS
    assert exact_search_device("flat") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("FASHION_CIR_DEVICE")
    assert exact_search_device("flat") is None
    assert exact_search_device("flat", torch.device("cpu")) == torch.device("cpu")


def test_a_device_variable_that_names_no_device_is_one_sentence(monkeypatch):
    monkeypatch.setenv("FASHION_CIR_DEVICE", "gpu0")
    with pytest.raises(PipelineError, match="FASHION_CIR_DEVICE = 'gpu0' is not a torch device"):
        exact_search_device("flat")
