import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.training.losses import clip_loss, composed_retrieval_loss


def test_clip_loss_hand_computed():
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / 0.5 -> each row softmax over [2, 0]
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert clip_loss(image, text, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_ignores_identical_captions_as_negatives():
    image = F.normalize(torch.tensor([[1.0, 0.1], [1.0, -0.1]]), dim=-1)
    text = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), dim=-1)
    same = torch.ones(2, 2, dtype=torch.bool)
    assert clip_loss(image, text, 0.1, same_text=same).item() == pytest.approx(0.0, abs=1e-6)
    assert clip_loss(image, text, 0.1).item() > 0.5


def test_composed_loss_hand_computed_and_masks_the_target():
    bank = torch.eye(4)
    query = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1])
    hard = torch.tensor([[2, 0], [3, -1]])  # query 0 lists its own target as a "negative": must be masked
    static = torch.tensor([0, 3])           # static sample contains query 0's target: masked for query 0
    loss = composed_retrieval_loss(query, bank, target, hard, static, temperature=1.0)
    # query 0: positive 1; in-batch other target (1) -> 0; hard [2] -> 0; static [3] -> 0
    # query 1: positive 1; in-batch other target (0) -> 0; hard [3] -> 0; static [0, 3] -> 0, 0
    e = math.e
    expected = (-math.log(e / (e + 3)) - math.log(e / (e + 4))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_composed_loss_never_contrasts_a_query_with_its_targets_group():
    bank = torch.eye(4)
    query = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    target = torch.tensor([0, 1])
    hard, static = torch.tensor([[2], [3]]), torch.tensor([3])
    # rows 0 and 2 are attribute twins (one group), as are 1 and 3; each query's hard and static negatives and its
    # in-batch neighbour are then either its twin (masked) or the other group (score 0)
    twins = torch.tensor([0, 1, 0, 1])
    loss = composed_retrieval_loss(query, bank, target, hard, static, temperature=1.0, answer_group=twins)
    e = math.e
    expected = (-math.log(e / (e + 2)) - math.log(e / (e + 1))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    own_rows = composed_retrieval_loss(query, bank, target, hard, static, temperature=1.0,
                                       answer_group=torch.arange(4))
    assert own_rows.item() == pytest.approx(composed_retrieval_loss(query, bank, target, hard, static, 1.0).item())
    assert own_rows.item() > loss.item()


def test_composed_loss_without_hard_or_static_is_in_batch_infonce():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(6, 8), dim=-1)
    query = F.normalize(torch.randn(3, 8), dim=-1)
    target = torch.tensor([1, 4, 5])
    loss = composed_retrieval_loss(query, bank, target, torch.empty(3, 0, dtype=torch.long),
                                   torch.empty(0, dtype=torch.long), 0.1)
    reference = F.cross_entropy(query @ bank[target].T / 0.1, torch.arange(3))
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)


def test_hard_negatives_raise_the_loss_when_they_are_close():
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.95, 0.3]]), dim=-1)
    query = F.normalize(torch.tensor([[1.0, 0.05]]), dim=-1)
    none = composed_retrieval_loss(query, bank, torch.tensor([0]), torch.empty(1, 0, dtype=torch.long),
                                   torch.empty(0, dtype=torch.long), 0.1)
    hard = composed_retrieval_loss(query, bank, torch.tensor([0]), torch.tensor([[2]]),
                                   torch.empty(0, dtype=torch.long), 0.1)
    assert none.item() == pytest.approx(0.0, abs=1e-6)
    assert hard.item() > 0.1


def test_the_static_bank_holds_each_training_image_once():
    # "x" is a shirt and a toptee, and also in val: one bank row, taken from the train split.
    import pandas as pd

    from pipeline.training.stage2 import bank_rows

    images = pd.DataFrame({"name": ["x", "y", "x", "x", "z"], "split": ["val", "train", "train", "train", "train"],
                           "category": ["shirt", "shirt", "shirt", "toptee", "toptee"]})
    assert bank_rows(images).tolist() == [1, 2, 4]
