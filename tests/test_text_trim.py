"""The text tower reads only up to the batch's longest caption (RetrievalModel.encode_texts): CLIP's text attention
is causal and pools at the end-of-text token, so the padding after it never reaches a feature. The trimmed
features equal open_clip's own encode_text over the whole context up to floating-point rounding (fp32: within
1e-6 on unit-norm features, about 2e-7 measured; gradients within 1e-5 of their largest entry, about 7e-7
measured), and the text tower does a fraction of the FLOPs."""

from __future__ import annotations

import open_clip
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import ModelParams
from pipeline.models.clip import create_model, tokenizer_for
from pipeline.models.retrieval import TEXT_BUCKET, RetrievalModel

CAPTIONS = ["is red", "a blue striped dress with white stripes, short sleeves, a v-neck and a mini cut",
            "has a v neckline and is darker", "a shirt", "is longer and has no pattern, a plain black toptee"]


def _classic() -> RetrievalModel:
    """The demo's tiny architecture: open_clip's classic CLIP, text modules as attributes of the model."""
    return create_model(ModelParams(arch="fciq-tiny"), seed=0)


def _custom_text() -> RetrievalModel:
    """The same sizes in open_clip's CustomTextCLIP layout, the text modules under `clip.text`."""
    torch.manual_seed(0)
    clip = open_clip.CustomTextCLIP(embed_dim=128, vision_cfg={"image_size": 64, "layers": 2, "width": 64,
                                                               "head_width": 32, "patch_size": 16},
                                    text_cfg={"context_length": 40, "vocab_size": 49408, "width": 64, "heads": 2,
                                              "layers": 2})
    open_clip.set_model_preprocess_cfg(clip, {"size": 64, "mean": open_clip.OPENAI_DATASET_MEAN,
                                              "std": open_clip.OPENAI_DATASET_STD})
    return RetrievalModel(clip, "fciq-tiny")


LAYOUTS = {"classic": _classic, "custom_text": _custom_text}


def _tokens(captions=CAPTIONS) -> torch.Tensor:
    return tokenizer_for("fciq-tiny")(captions)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_trimmed_features_and_gradients_equal_the_whole_contexts(layout):
    model, tokens = LAYOUTS[layout](), _tokens()
    assert model.text_length(tokens) < tokens.shape[1]
    weights = torch.randn(len(CAPTIONS), model.embed_dim, generator=torch.Generator().manual_seed(1))
    results = []
    for trim in (True, False):
        model.zero_grad()
        model.trim_text = trim
        features = model.encode_texts(tokens)
        (features * weights).sum().backward()
        results.append((features.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                            if p.grad is not None}))
    (trimmed, trimmed_grads), (whole, whole_grads) = results
    torch.testing.assert_close(trimmed, whole, atol=1e-6, rtol=0)
    assert trimmed_grads.keys() == whole_grads.keys() and trimmed_grads
    for name, grad in whole_grads.items():
        torch.testing.assert_close(trimmed_grads[name], grad, atol=1e-5 * float(grad.abs().max()), rtol=0,
                                   msg=name)


def test_the_length_is_the_longest_caption_rounded_up_to_a_bucket():
    model = _classic()
    tokens = _tokens()
    longest = int(model.token_counts(tokens).max())
    assert model.text_length(tokens) == -(-longest // TEXT_BUCKET) * TEXT_BUCKET
    assert model.text_length(_tokens(["x " * 100])) == tokens.shape[1]  # a caption that fills the context
    assert model.token_counts(_tokens(["a shirt"])).tolist() == [4]  # start, a, shirt, end


@pytest.mark.parametrize("change", ["bidirectional", "last_pooling", "trim_off"])
def test_towers_a_trim_would_change_read_the_whole_context(change):
    model, tokens = _classic(), _tokens()
    if change == "bidirectional":
        model.clip.attn_mask = None
    elif change == "last_pooling":
        model.clip.text_pool_type = "last"
    else:
        model.trim_text = False
    assert model.text_length(tokens) == tokens.shape[1]


def test_the_trim_cuts_the_text_towers_flops():
    model, tokens = _classic(), _tokens()

    def flops(trim: bool) -> int:
        model.trim_text = trim
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.encode_texts(tokens)
        return counter.get_total_flops()

    assert flops(True) <= flops(False) * model.text_length(tokens) / tokens.shape[1] * 1.05
