"""Stage 2's hard negatives: the `mine` stage's set, or mined again with the model in training by the same rule
(pipeline/negatives/mine.py): per category, around the model's composed query, never an answer."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ModelParams, NegativesParams, Params, Stage2Params
from pipeline.errors import PipelineError
from pipeline.features.table import write_features
from pipeline.io import write_parquet
from pipeline.models.clip import create_model, save_checkpoint, tokenizer_for
from pipeline.negatives import mine
from pipeline.paths import Paths
from pipeline.runtime import Runtime
from pipeline.training import stage2
from pipeline.training.stage2 import HardNegatives, Remining, StaticBank

TEXTS = ["is red", "has long sleeves", "is shorter", "has a v-neck", "is striped", "is navy and sleeveless"]
N = 40  # training images; even rows are dresses, odd rows shirts; row r and r + 20 share a caption (twins)


def _images() -> pd.DataFrame:
    return pd.DataFrame({"name": [f"i{r}" for r in range(N)], "category": ["dress", "shirt"] * (N // 2),
                         "split": "train"})


def _captions(images: pd.DataFrame) -> pd.DataFrame:
    return images.assign(caption=[f"garment {r % 20}" for r in range(len(images))])


def _triplets() -> pd.DataFrame:
    references, targets = np.arange(6), np.arange(6) + 10  # each target in its reference's category
    return pd.DataFrame({"triplet_id": [f"t{i}" for i in range(6)], "category": ["dress", "shirt"] * 3,
                         "reference": [f"i{r}" for r in references], "target": [f"i{t}" for t in targets],
                         "query_text": TEXTS, "split": "train"})


def _problem(remine_every: int, rule: str = "target", from_epoch: int = 0, composition: str = "combiner"):
    torch.manual_seed(0)
    model = create_model(ModelParams(arch="fciq-tiny", pretrained=""), seed=0)
    model.set_composition(composition)  # the combiner's dropout must be off while mining
    features = F.normalize(torch.randn(N, model.embed_dim), dim=-1)
    images, triplets = _images(), _triplets()
    settings = NegativesParams(k=3, anchor="query", false_negatives=rule)
    position = {name: i for i, name in enumerate(images["name"])}
    remining = Remining.build(images, features.numpy(), _captions(images), triplets, position, settings, seed=0)
    bank = StaticBank(features, torch.from_numpy(remining.gallery.groups), torch.arange(6), torch.arange(6) + 10)
    offline = torch.randint(0, N, (6, 3))
    tokens = tokenizer_for(model.arch)(TEXTS)
    hard = HardNegatives(offline, model, tokens, bank, remining,
                         Stage2Params(remine_every=remine_every, hard_negatives_from_epoch=from_epoch), Runtime())
    return model, bank, offline, tokens, hard


def _expected(model, bank: StaticBank, tokens) -> torch.Tensor:
    """Brute force: each triplet's 3 best images of its category by the model's composed query, answers left out."""
    model.eval()
    with torch.no_grad():
        scores = model.compose(bank.features[bank.reference], model.encode_texts(tokens)) @ bank.features.T
    category = torch.arange(N) % 2
    scores[category[None, :] != category[bank.target][:, None]] = float("-inf")
    group = bank.answer_group
    scores[group[None, :] == group[bank.target][:, None]] = float("-inf")  # the target and its twins
    return scores.topk(3).indices


def test_mined_again_are_the_current_models_nearest_non_answers_of_the_category():
    model, bank, offline, tokens, hard = _problem(remine_every=2)
    model.train()
    assert hard.for_epoch(0) is offline and hard.for_epoch(1) is offline
    mined = hard.for_epoch(2)
    assert model.training  # back in training mode after mining
    assert torch.equal(mined, _expected(model, bank, tokens))
    assert ((mined % 2) == (bank.target % 2)[:, None]).all()  # never from another category
    assert hard.for_epoch(3) is mined  # kept until the next refresh


def test_mined_again_skip_the_targets_attribute_twins():
    model, bank, _, tokens, hard = _problem(remine_every=1, rule="same_caption")
    mined = hard.for_epoch(1)
    assert torch.equal(mined, _expected(model, bank, tokens))
    assert not (mined == (bank.target + 20)[:, None]).any()


def test_without_mining_again_the_mine_stage_set_is_used_from_the_curriculums_epoch():
    _, _, offline, _, hard = _problem(remine_every=0, from_epoch=2)
    assert hard.for_epoch(0).shape == (6, 0) and hard.for_epoch(1).shape == (6, 0)
    assert hard.for_epoch(2) is offline and hard.for_epoch(7) is offline


@pytest.mark.parametrize("rule", ["target", "same_caption"])
def test_the_mine_stage_and_stage2_mine_the_same_negatives_from_the_same_inputs(tmp_path, rule):
    """`mine` around the stage-1 model's zero-shot query and stage 2 mining again with that same model (sum
    composition, before any step) see the same features, so they must find the same negatives."""
    model, bank, _, tokens, hard = _problem(remine_every=1, rule=rule, composition="sum")
    model.eval()
    paths, images, triplets = Paths(tmp_path), _images(), _triplets()
    val = pd.DataFrame({"name": ["v0"], "category": ["dress"], "split": ["val"]})  # never a training negative
    write_features(paths.image_features, pd.concat([images, val], ignore_index=True),
                   np.concatenate([bank.features.numpy(), bank.features.numpy()[:1]]))
    with torch.no_grad():
        write_features(paths.query_features, triplets[["triplet_id", "split"]], model.encode_texts(tokens).numpy())
    write_parquet(paths.captions, pa.Table.from_pandas(_captions(pd.concat([images, val], ignore_index=True))))
    write_parquet(paths.triplets("train"), pa.Table.from_pandas(triplets))
    mine.run(Params(negatives=NegativesParams(k=3, anchor="query", false_negatives=rule)), paths)

    mined = pd.read_parquet(paths.negatives).set_index("triplet_id")["negatives"]
    again = hard.for_epoch(1)
    assert [list(mined[t]) for t in triplets["triplet_id"]] == [[f"i{r}" for r in row] for row in again.tolist()]


def test_mining_again_around_the_frozen_target_is_refused(tmp_path):
    params = Params(negatives=NegativesParams(anchor="target"), stage2=Stage2Params(remine_every=1))
    save_checkpoint(Paths(tmp_path).stage1_dir, create_model(ModelParams(), seed=0))
    with pytest.raises(PipelineError, match=r"stage2.remine_every = 1 .* set negatives.anchor to 'query'"):
        stage2._train(params, Runtime(), Paths(tmp_path))
