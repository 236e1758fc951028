"""experiments/error_analysis.py on a hand-made ranking, where the kind of every image above the target is known."""

import sys

import numpy as np
import pandas as pd
import torch

from pipeline.captioning.attributes import Attributes
from pipeline.evaluation.protocols import Ranking
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
from error_analysis import KINDS, attribute_twins, family_of, outranking_kinds, recall  # noqa: E402


def _dress(color: str, sleeves: str = "long sleeves", neckline: str = "v-neck", length: str = "mini") -> Attributes:
    return Attributes(category="dress", colors=(color,), pattern="solid", sleeves=sleeves, neckline=neckline,
                      length=length)


def test_family_of_follows_the_demo_layout():
    # families of 4 are written first (2 val families here: numbers 0-7), distractors after, one family each
    assert family_of("DT000005", "train", 4, 2) == family_of("DT000007", "train", 4, 2) == 1
    assert family_of("DV000003", "val", 4, 2) == 0
    assert family_of("DV000008", "val", 4, 2) != family_of("DV000009", "val", 4, 2)
    assert family_of("DV000008", "val", 4, 2) < 0


def test_every_image_above_the_target_gets_its_kind():
    names = np.array(["DV000000", "DV000001", "DV000002", "DV000008", "DV000009", "DV000010", "DV000011"])
    attributes = {
        "DV000000": _dress("red"),                                        # reference
        "DV000001": _dress("blue"),                                       # target
        "DV000002": _dress("blue", sleeves="sleeveless"),                 # sibling
        "DV000008": _dress("blue"),                                       # same attributes, another garment
        "DV000009": _dress("blue", length="maxi"),                        # 1 field apart
        "DV000010": _dress("green", neckline="round neck", length="maxi"),  # 3 fields apart
        "DV000011": _dress("blue", neckline="high neck"),                 # below the target: not counted
    }
    scores = torch.tensor([[0.9, 0.5, 0.6, 0.8, 0.7, 0.95, 0.1]])
    ranking = Ranking("dress", pd.DataFrame({"reference": ["DV000000"]}), names, scores, torch.eye(7),
                      torch.tensor([0]), torch.tensor([1]))
    every, top = outranking_kinds([ranking], "val", attributes, family_size=4, families_val=2)
    assert every == {"reference": 1, "sibling": 1, "same attributes": 1, "1 field apart": 1, "3+ fields apart": 1}
    assert top == {"3+ fields apart": 1}
    assert set(every) <= set(KINDS)
    assert recall([ranking]) == {"R@1": 0.0, "R@5": 0.0, "R@10": 100.0, "R@50": 100.0}


def test_attribute_twins_are_counted_within_the_triplets_category():
    triplets = pd.DataFrame({"triplet_id": ["t1", "t2"], "category": ["dress", "shirt"], "target": ["a", "b"]})
    negatives = pd.DataFrame({"triplet_id": ["t1", "t2"], "negatives": [["c", "d"], ["c"]]})
    group_of = {("dress", "a"): 0, ("dress", "c"): 0, ("dress", "d"): 1, ("shirt", "b"): 2, ("shirt", "c"): 0}
    assert attribute_twins(negatives, triplets, group_of) == (
        "1 of 3 mined negatives (33.33%) share the target's caption; 1 of 2 triplets have at least one")
