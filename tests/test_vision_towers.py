"""MLLM vision towers as the image encoder (model.vision): tiny random checkpoints of each family, in the key layouts
published checkpoints use (tests/support/tiny_mllms.py), loaded through the code a real checkpoint goes through."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pipeline.config import ModelParams, Stage1Params
from pipeline.errors import PipelineError
from pipeline.models.clip import create_model, input_preprocessing, load_checkpoint, save_checkpoint, tokenizer_for
from pipeline.models.preprocessing import image_loader, preprocessing
from pipeline.models.retrieval import TOWER_PREFIX
from pipeline.runtime import Runtime
from pipeline.training.loop import make_optimizer
from pipeline.training.stage1 import caption_alignment_loss, parameter_groups
from tests.support.tiny_mllms import FAMILIES, LANGUAGE_SHARD, TOWER_SHARD, build_tiny_mllm, tower_prefix

CAPTIONS = ["a red dress", "a blue shirt", "a green toptee", "a black dress"]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny checkpoint per family in its published layout (32 px, patch 8, 3 layers of width 32)."""
    root = tmp_path_factory.mktemp("mllms")
    return {family: build_tiny_mllm(family, root / family) for family in FAMILIES}


def params(checkpoint: Path | str, **changes) -> ModelParams:
    return ModelParams(arch="fciq-tiny", vision=str(checkpoint), **changes)


def pixels(n: int = 4, side: int = 32) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, side, side), dtype=np.uint8))


def whole_mllm_tower(family: str, directory: Path) -> torch.nn.Module:
    """The vision tower of the whole MLLM as transformers itself loads the checkpoint (its own key conversions)."""
    import transformers as tf

    model_class = {"llava": tf.LlavaForConditionalGeneration, "llava_next": tf.LlavaNextForConditionalGeneration,
                   "internvl": tf.InternVLForConditionalGeneration, "blip2": tf.Blip2ForConditionalGeneration}[family]
    mllm = model_class.from_pretrained(directory, dtype=torch.float32).eval()
    return mllm.vision_model if family == "blip2" else mllm.model.vision_tower


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_pools_the_tokens_its_mllm_reads(family: str, checkpoints: dict[str, Path]):
    """The tower kept up to the MLLM's own feature layer (LLaVA: the second-to-last) gives the same tokens as that
    layer of the whole MLLM loaded by transformers, so the published key layout was read right."""
    model = create_model(params(checkpoints[family]), seed=0).eval()
    tower = model.clip.visual
    layer = {"llava": -2, "llava_next": -2}.get(family, -1)
    assert tower.description["layer"] == layer
    x = (pixels().float() / 255 - model.mean) / model.std
    with torch.no_grad():
        reference = whole_mllm_tower(family, checkpoints[family])(pixel_values=x, output_hidden_states=True)
        tokens = reference.last_hidden_state if layer == -1 else reference.hidden_states[layer]
        assert torch.allclose(tower.pooled(x), tokens[:, 1:].mean(dim=1), atol=1e-5)
        features = model.encode_images(pixels())
    assert features.shape == (4, model.embed_dim)
    assert torch.allclose(features.norm(dim=-1), torch.ones(4))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_a_stage1_step(family: str, checkpoints: dict[str, Path]):
    """vision_lr > 0 moves the tower, the projection and the text tower; vision_lr = 0 leaves the tower as read."""
    for vision_lr, tower_moves in ((1e-3, True), (0.0, False)):
        model = create_model(params(checkpoints[family]), seed=0)
        settings = Stage1Params(epochs=1, batch_size=4, vision_lr=vision_lr)
        groups = parameter_groups(model, settings)
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        tokens = tokenizer_for(model.arch)(CAPTIONS)
        loss = caption_alignment_loss(model, pixels(), tokens, torch.arange(4), Runtime(), settings.temperature)
        optimizer = make_optimizer(groups, settings)
        loss(np.arange(4), np.random.default_rng(0), 0).backward()
        optimizer.step()
        moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
        assert any(name.startswith("clip.visual.head.") for name in moved)
        assert any(name.startswith(TOWER_PREFIX) for name in moved) == tower_moves
        assert any(name.startswith("clip.transformer.") for name in moved)
        assert model.clip.visual.weights_in_checkpoint == tower_moves


def test_the_transformers_layout_loads_too(tmp_path: Path):
    """transformers >= 4.52 names the tower `model.vision_tower.*`; a checkpoint it saved loads the same way."""
    for family in ("llava", "internvl"):
        published = build_tiny_mllm(family, tmp_path / f"{family}-published")
        recent = build_tiny_mllm(family, tmp_path / f"{family}-recent", layout="transformers")
        assert tower_prefix(family, "transformers") == "model.vision_tower."
        a, b = (create_model(params(p), seed=0).eval() for p in (published, recent))
        with torch.no_grad():
            assert torch.equal(a.encode_images(pixels()), b.encode_images(pixels()))
        assert a.clip.visual.description["digest"] == b.clip.visual.description["digest"]


def test_only_the_vision_towers_weights_are_read(checkpoints: dict[str, Path], tmp_path: Path):
    """The language model's shard is listed in the index but never opened: here it is not even a safetensors file."""
    directory = shutil.copytree(checkpoints["llava"], tmp_path / "llava")
    (directory / LANGUAGE_SHARD).write_bytes(b"not a weights file")
    model = create_model(params(directory), seed=0)
    assert model.clip.visual.description["family"] == "LLaVA"
    with safe_open(str(directory / TOWER_SHARD), framework="pt") as shard:
        last = max(int(name.split("layers.")[1].split(".")[0]) for name in shard.keys() if "layers." in name)
    assert len(model.clip.visual.tower.encoder.layers) == last  # the last layer (after the one LLaVA reads) is unread


def test_layer_and_pooling_are_choices(checkpoints: dict[str, Path]):
    last = create_model(params(checkpoints["llava"], vision_layer=-1, vision_pooling="cls"), seed=0)
    assert len(last.clip.visual.tower.encoder.layers) == 3 and last.clip.visual.pooling == "cls"
    with pytest.raises(PipelineError, match=r"model.vision_layer = -4 is not a layer .* allowed: -3 to -1"):
        create_model(params(checkpoints["llava"], vision_layer=-4), seed=0)


def test_preprocessing_comes_from_the_checkpoints_image_processor(checkpoints: dict[str, Path]):
    llava, internvl = (input_preprocessing(params(checkpoints[f])) for f in ("llava", "internvl"))
    assert (llava["size"], llava["resize_mode"], llava["interpolation"]) == (32, "shortest", "bicubic")
    assert llava["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert (internvl["size"], internvl["resize_mode"]) == (32, "squash")  # InternVL's processor: no crop, one tile
    assert internvl["mean"] == pytest.approx([0.485, 0.456, 0.406])
    model = create_model(params(checkpoints["internvl"]), seed=0)
    assert preprocessing(model) == input_preprocessing(params(checkpoints["internvl"]))  # what `decode` stores
    from PIL import Image

    assert image_loader(llava)(Image.new("RGB", (64, 48))).shape == (3, 32, 32)


def test_a_frozen_tower_is_stored_by_reference_and_checked_by_digest(checkpoints: dict[str, Path], tmp_path: Path):
    source = shutil.copytree(checkpoints["blip2"], tmp_path / "blip2")
    model = create_model(params(source), seed=0).eval()
    save_checkpoint(tmp_path / "ckpt", model)
    stored = torch.load(tmp_path / "ckpt" / "model.pt", weights_only=True)
    assert not any(key.startswith(TOWER_PREFIX) for key in stored)
    assert any(key.startswith("clip.visual.head.") for key in stored)
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(model.encode_images(pixels()), loaded.encode_images(pixels()))
    shard = source / TOWER_SHARD
    with safe_open(str(shard), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    name = next(n for n in tensors if "layers.0.mlp.fc1.weight" in n)
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(PipelineError, match=r"vision tower weights in model.vision = .* are not those this model "
                                            r"was trained with .*run `dvc repro`"):
        load_checkpoint(tmp_path / "ckpt")


def test_a_trained_tower_is_stored_with_the_model(checkpoints: dict[str, Path], tmp_path: Path):
    source = shutil.copytree(checkpoints["internvl"], tmp_path / "internvl")
    model = create_model(params(source), seed=0)
    parameter_groups(model, Stage1Params(vision_lr=1e-5))
    with torch.no_grad():
        next(model.clip.visual.tower.parameters()).add_(0.5)  # as if stage 1 had trained it
    save_checkpoint(tmp_path / "ckpt", model.eval())
    shutil.rmtree(source)  # self-contained: the original checkpoint is no longer needed
    loaded = load_checkpoint(tmp_path / "ckpt").eval()
    with torch.no_grad():
        assert torch.equal(model.encode_images(pixels()), loaded.encode_images(pixels()))
    assert json.loads((tmp_path / "ckpt" / "model.json").read_text())["vision"]["weights_in_checkpoint"] is True


def test_bad_vision_values_are_one_sentence(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(PipelineError, match=r"model.vision = '.*nowhere' is not a directory.*allowed: \"\""):
        create_model(params(missing), seed=0)
    text_only = tmp_path / "llama"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    with pytest.raises(PipelineError, match=r"is a 'llama' checkpoint that has no vision tower; allowed: .*LLaVA"):
        input_preprocessing(params(text_only))
    other = tmp_path / "qwen"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "vision_config": {}}))
    with pytest.raises(PipelineError, match=r"'qwen2_vl' checkpoint that has a vision tower of a family not supported"):
        create_model(params(other), seed=0)
    original = tmp_path / "internvl-original"
    original.mkdir()
    (original / "config.json").write_text(json.dumps({"model_type": "internvl_chat"}))
    with pytest.raises(PipelineError, match=r"original InternVL checkpoint .* '-hf' version"):
        create_model(params(original), seed=0)
    with pytest.raises(PipelineError, match=r"stage1.vision_lr = 0.001 is the learning rate of an MLLM vision tower"):
        parameter_groups(create_model(ModelParams(arch="fciq-tiny"), seed=0), Stage1Params(vision_lr=1e-3))


def _hub_cache(cache: Path, repo_id: str, checkpoint: Path, files: list[str]) -> None:
    """A Hugging Face cache holding `files` of `checkpoint` as the snapshot of `repo_id`'s main branch."""
    commit = "0" * 40
    entry = cache / f"models--{repo_id.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True)
    (entry / "refs" / "main").write_text(commit)
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in files:
        shutil.copy2(checkpoint / name, snapshot / name)


def test_a_hugging_face_id_fetches_only_the_files_it_needs(checkpoints: dict[str, Path], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch):
    """Through huggingface_hub's cache in offline mode (no network here): the language model's shard is not in the
    cache, and the tower loads without it. An id that is not there is one sentence."""
    from huggingface_hub import constants

    files = ["config.json", "preprocessor_config.json", "model.safetensors.index.json", TOWER_SHARD]
    _hub_cache(tmp_path / "hub", "tiny-org/tiny-llava", checkpoints["llava"], files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = create_model(params("tiny-org/tiny-llava"), seed=0).eval()
    local = create_model(params(checkpoints["llava"]), seed=0).eval()
    with torch.no_grad():
        assert torch.equal(model.encode_images(pixels()), local.encode_images(pixels()))
    with pytest.raises(PipelineError, match=r"model.vision = 'tiny-org/absent' is neither a local directory nor a "
                                            r"Hugging Face model found online or in the local cache"):
        create_model(params("tiny-org/absent"), seed=0)


def test_a_tensor_the_tower_uses_missing_from_the_checkpoint_is_one_sentence(checkpoints: dict[str, Path],
                                                                          tmp_path: Path):
    """BLIP-2 normalises its tokens with post_layernorm, so a checkpoint without it is incomplete; LLaVA's CLIP uses
    it only for CLIP's own pooled vector, which is never read here, so it may be absent."""
    for family, loads in (("blip2", False), ("llava", True)):
        directory = shutil.copytree(checkpoints[family], tmp_path / family)
        shard, index = directory / TOWER_SHARD, directory / "model.safetensors.index.json"
        with safe_open(str(shard), framework="pt") as handle:
            kept = {name: handle.get_tensor(name) for name in handle.keys() if "post_layernorm" not in name}
        save_file(kept, str(shard), metadata={"format": "pt"})
        listed = json.loads(index.read_text())
        listed["weight_map"] = {n: f for n, f in listed["weight_map"].items() if "post_layernorm" not in n}
        index.write_text(json.dumps(listed))
        if loads:
            create_model(params(directory), seed=0)
        else:
            with pytest.raises(PipelineError, match=r"lacks 2 of the vision tower's tensors \(first: post_layernorm"):
                create_model(params(directory), seed=0)
