import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.negatives.false_negatives import answer_groups


@pytest.fixture
def captions():
    return pd.DataFrame({"category": ["dress", "dress", "dress", "shirt", "shirt"], "name": ["a", "b", "c", "d", "a"],
                         "caption": ["a red dress", "a blue dress", "a red dress", "a blue shirt", "a red shirt"]})


def _images(*keys: str) -> pd.DataFrame:
    return pd.DataFrame([key.split("/") for key in keys], columns=["category", "name"])


def test_only_the_target_is_its_own_group(captions):
    assert answer_groups(_images("dress/c", "dress/a", "dress/b"), "target", captions).tolist() == [0, 1, 2]


def test_images_with_identical_captions_share_a_group(captions):
    groups = answer_groups(_images("dress/a", "dress/b", "dress/c", "shirt/d", "shirt/a"), "same_caption", captions)
    assert groups[0] == groups[2]
    assert len({groups[0], groups[1], groups[3], groups[4]}) == 4  # image a's shirt caption is its own


def test_an_image_without_a_caption_is_one_sentence(captions):
    with pytest.raises(PipelineError, match=r"no caption for image 'd' \(1 missing\)"):
        answer_groups(_images("dress/a", "dress/d"), "same_caption", captions)
    assert np.array_equal(answer_groups(_images("dress/zz"), "target", captions), [0])  # needs no captions


def test_empty_captions_make_no_twins():
    captions = pd.DataFrame({"category": ["dress"] * 4, "name": ["a", "b", "c", "d"],
                             "caption": ["", " ", "a red dress", "a red dress"]})
    groups = answer_groups(_images("dress/a", "dress/b", "dress/c", "dress/d"), "same_caption", captions)
    assert groups[2] == groups[3]
    assert len({groups[0], groups[1], groups[2]}) == 3
