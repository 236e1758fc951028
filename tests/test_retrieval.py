"""Stage 2's hard negatives: the `mine` stage's set, or re-mined with the model in training."""

import torch
import torch.nn.functional as F

from pipeline.config import ModelParams, NegativesParams, Stage2Params
from pipeline.models.clip import create_model, tokenizer_for
from pipeline.runtime import Runtime
from pipeline.training.stage2 import HardNegatives, StaticBank

TEXTS = ["is red", "has long sleeves", "is shorter", "has a v-neck", "is striped", "is navy and sleeveless"]


def _problem(remine_every: int, from_epoch: int = 0, group: torch.Tensor | None = None):
    torch.manual_seed(0)
    model = create_model(ModelParams(arch="fciq-tiny", pretrained=""), seed=0)
    model.set_composition("combiner")  # its dropout must be off while mining
    features = F.normalize(torch.randn(40, model.embed_dim), dim=-1)
    group = torch.arange(40) if group is None else group
    bank = StaticBank(features, group, torch.arange(6), torch.arange(6) + 10)
    offline = torch.randint(0, 40, (6, 3))
    tokens = tokenizer_for(model.arch)(TEXTS)
    hard = HardNegatives(offline, model, tokens, bank, NegativesParams(k=3),
                         Stage2Params(remine_every=remine_every, hard_negatives_from_epoch=from_epoch), 0, Runtime())
    return model, bank, offline, tokens, hard


def test_refreshed_negatives_are_the_current_models_nearest_non_targets():
    model, bank, offline, tokens, hard = _problem(remine_every=2)
    model.train()
    assert hard.for_epoch(0) is offline and hard.for_epoch(1) is offline
    mined = hard.for_epoch(2)
    assert model.training  # back in training mode after mining
    model.eval()
    with torch.no_grad():
        scores = model.compose(bank.features[bank.reference], model.encode_texts(tokens)) @ bank.features.T
    scores[torch.arange(6), bank.target] = float("-inf")
    assert torch.equal(mined, scores.topk(3).indices)
    assert not torch.equal(mined, offline)
    assert hard.for_epoch(3) is mined  # kept until the next refresh


def test_refreshed_negatives_skip_the_targets_attribute_twins():
    model, bank, _, tokens, hard = _problem(remine_every=1, group=torch.arange(40) % 20)  # row r twins row r + 20
    mined = hard.for_epoch(1)
    model.eval()
    with torch.no_grad():
        scores = model.compose(bank.features[bank.reference], model.encode_texts(tokens)) @ bank.features.T
    group = bank.answer_group
    scores[group[None, :] == group[bank.target][:, None]] = float("-inf")  # the target and its twin
    assert torch.equal(mined, scores.topk(3).indices)
    assert not (mined == (bank.target + 20)[:, None]).any()


def test_without_refresh_the_mine_stage_set_is_used_from_the_curriculums_epoch():
    _, _, offline, _, hard = _problem(remine_every=0, from_epoch=2)
    assert hard.for_epoch(0).shape == (6, 0) and hard.for_epoch(1).shape == (6, 0)
    assert hard.for_epoch(2) is offline and hard.for_epoch(7) is offline
