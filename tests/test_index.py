import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.negatives.hard import mine_hard_negatives
from pipeline.search.faiss_index import build_index


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_mining_never_returns_the_target(kind):
    rng = np.random.default_rng(0)
    gallery = _unit(rng.normal(size=(300, 16)))
    targets = rng.integers(0, 300, size=50)
    queries = _unit(gallery[targets] + 0.05 * rng.normal(size=(50, 16)))  # queries sit right on their targets
    found, scores = mine_hard_negatives(queries, gallery, targets, k=10, kind=kind)
    assert found.shape == (50, 10)
    assert not (found == targets[:, None]).any()
    assert (found >= 0).all()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # hardest first


def test_flat_mining_returns_exactly_the_nearest_non_targets():
    gallery = _unit(np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1], [-1, 0]], dtype=np.float32))
    found, _ = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), k=2, kind="flat")
    assert found.tolist() == [[1, 2]]


def test_near_duplicates_of_the_target_are_skipped():
    gallery = _unit(np.array([[1, 0], [1, 0.001], [0.7, 0.7], [0, 1]], dtype=np.float32))
    found, _ = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), k=2, kind="flat",
                                   max_target_similarity=0.99)
    assert found.tolist() == [[2, 3]]


def test_candidates_in_the_targets_group_are_skipped():
    gallery = _unit(np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1], [-1, 0]], dtype=np.float32))
    groups = np.array([7, 7, 3, 4, 5])  # row 1 is an attribute twin of the target (row 0)
    found, _ = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), k=2, kind="flat", answer_groups=groups)
    assert found.tolist() == [[2, 3]]


def test_fewer_candidates_than_k_are_padded():
    gallery = _unit(np.eye(3, dtype=np.float32))
    found, scores = mine_hard_negatives(gallery[[0]], gallery, np.array([0]), k=4, kind="flat")
    assert sorted(found[0, :2].tolist()) == [1, 2] and found[0, 2:].tolist() == [-1, -1]
    assert np.isnan(scores[0, 2:]).all()


def test_k_zero_mines_nothing():
    gallery = _unit(np.eye(3, dtype=np.float32))
    found, _ = mine_hard_negatives(gallery, gallery, np.arange(3), k=0, kind="flat")
    assert found.shape == (3, 0)


def test_unknown_index_kind_is_one_sentence():
    with pytest.raises(PipelineError, match="index kind 'annoy' is not allowed: use flat, hnsw, ivf"):
        build_index(np.eye(2, dtype=np.float32), "annoy")
