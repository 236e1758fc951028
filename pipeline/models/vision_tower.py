"""An MLLM's vision tower as the image encoder: the tower (LLaVA's CLIP ViT-L, InternVL's InternViT, BLIP-2's EVA
ViT-g), its tokens at one layer pooled into one vector, and a projection into the text tower's space.

The tower is kept only up to the layer pooled (LLaVA reads its second-to-last layer, so the last one is never built
or read), and the module stands where open_clip's image tower stood (`clip.visual`): open_clip's encode_image, the
runtime's compile, stage 2's frozen image side and every later stage treat it as they treat open_clip's own. Stage 1
aligns it with the text tower (pipeline/training/stage1.py).

Which weights a checkpoint keeps: a tower that stage 1 trained is saved with the model (self-contained); a frozen one
is saved as its reference (`model.vision`) plus the digest of the tensors read, and read again from there on load,
which stops with one sentence when the weights found are not those it was trained with.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.models.mllm_checkpoint import (
    CheckpointFiles,
    feature_layer,
    image_preprocessing,
    layers_below,
    read_family,
    read_tower_tensors,
    tensors_digest,
)

Pooling = Literal["mean", "cls"]


class MLLMVisionTower(nn.Module):
    """Pixels (normalised as `preprocess_cfg` says) -> [N, embed_dim]: the tower's tokens at its last kept layer,
    pooled (`mean` of the patch tokens, or the class token `cls`), layer-normalised and projected."""

    def __init__(self, tower: nn.Module, description: dict, embed_dim: int):
        super().__init__()
        self.tower = tower
        self.description = description  # JSON: reference, family, config, layer, pooling, digest, preprocess
        self.preprocess_cfg = dict(description["preprocess"])
        self.weights_in_checkpoint = bool(description.get("weights_in_checkpoint", False))
        width = int(tower.config.hidden_size)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, embed_dim, bias=False))
        nn.init.normal_(self.head[1].weight, std=width ** -0.5)  # as CLIP initialises its image projection
        self.pooling: Pooling = description["pooling"]
        size = tower.config.image_size
        patch = tower.config.patch_size
        sides = [size, size] if isinstance(size, int) else list(size)
        patches = [patch, patch] if isinstance(patch, int) else list(patch)
        self.patch_tokens = (sides[0] // patches[0]) * (sides[1] // patches[1])

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, tower width]: the tokens of the last kept layer, pooled."""
        tokens = self.tower(pixel_values=pixels).last_hidden_state
        leading = tokens.shape[1] - self.patch_tokens  # class token(s) before the patch tokens
        return tokens[:, :leading].mean(dim=1) if self.pooling == "cls" else tokens[:, leading:].mean(dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(pixels))

    def checkpoint_description(self) -> dict:
        """What model.json records: how to rebuild the tower and where its weights are."""
        return {**self.description, "weights_in_checkpoint": self.weights_in_checkpoint}


def tower_class(config) -> type[nn.Module]:
    """The transformers class of a vision config (BLIP-2's vision model is not in AutoModel's mapping)."""
    from transformers import Blip2VisionConfig, Blip2VisionModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    return Blip2VisionModel if isinstance(config, Blip2VisionConfig) else MODEL_MAPPING[type(config)]


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' loading report and progress bar say nothing here: the tensors were chosen on purpose, and what
    is missing is checked (and said in one sentence) by load_tower."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def build_tower(config, tensors: dict[str, torch.Tensor], reference: str) -> nn.Module:
    """The tower of `config` with `tensors` (names relative to the tower), in fp32, through transformers'
    from_pretrained (its meta-device init, dtype cast and key conversions); one sentence if a tensor is missing."""
    with _quiet_transformers():
        tower, info = tower_class(config).from_pretrained(None, config=config, state_dict=tensors,
                                                          dtype=torch.float32, output_loading_info=True)
    tower = drop_unused_head(tower)
    used = set(tower.state_dict())
    missing = [key for key in info["missing_keys"] if key in used]
    if missing:
        raise PipelineError(f"model.vision = '{reference}' lacks {len(missing)} of the vision tower's tensors (first: "
                            f"{missing[0]}); the checkpoint is incomplete or not of the family its config names.")
    return tower


def drop_unused_head(tower: nn.Module) -> nn.Module:
    """The tower without what the pooled tokens never pass through: CLIP's post_layernorm normalises only CLIP's own
    pooled vector (BLIP-2's normalises the tokens, and stays), so no parameter is left without a gradient (which DDP
    refuses)."""
    from transformers import CLIPVisionConfig

    if isinstance(tower.config, CLIPVisionConfig) and hasattr(tower, "post_layernorm"):
        tower.post_layernorm = nn.Identity()
    return tower


def vision_preprocessing(reference: str) -> dict:
    """The preprocessing an MLLM tower expects (for `decode`, which must not read any weights)."""
    files = CheckpointFiles(reference)
    read_family(files)
    return image_preprocessing(files)


def load_tower(reference: str, layer: int | None, pooling: Pooling, embed_dim: int) -> MLLMVisionTower:
    """The vision tower of the MLLM checkpoint `reference`, kept up to `layer` (None: the layer the MLLM reads),
    with a freshly initialised projection to `embed_dim` (from the current torch RNG state)."""
    from transformers import AutoConfig

    files = CheckpointFiles(reference)
    family, raw = read_family(files)
    layer = feature_layer(family, raw, reference) if layer is None else layer
    vision_config = AutoConfig.from_pretrained(str(files.directory_of("config.json"))).vision_config
    depth = int(vision_config.num_hidden_layers)
    if not -depth <= layer <= -1:
        raise PipelineError(f"model.vision_layer = {layer} is not a layer of the vision tower of '{reference}', "
                            f"which has {depth}; allowed: -{depth} to -1.")
    vision_config.num_hidden_layers = depth + 1 + layer
    tensors = read_tower_tensors(files, family, layers_below(vision_config.num_hidden_layers))
    tower = build_tower(vision_config, tensors, reference)
    description = {"reference": reference, "family": family.name, "config": vision_config.to_dict(),
                   "layer": layer, "pooling": pooling, "digest": tensors_digest(tower.state_dict()),
                   "preprocess": image_preprocessing(files)}
    return MLLMVisionTower(tower, description, embed_dim)


def rebuild_tower(description: dict, embed_dim: int, stored: dict[str, torch.Tensor] | None,
                  root: Path = Path(".")) -> MLLMVisionTower:
    """The tower a checkpoint describes: from its own `stored` tensors (a tower stage 1 trained), or read again from
    its reference (a relative directory under `root`) and checked against the digest it was trained with."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(**description["config"])
    reference = description["reference"]
    if stored is not None:
        tower = build_tower(config, stored, reference)
    else:
        under_root = root / reference
        files = CheckpointFiles(str(under_root) if not Path(reference).is_absolute() and under_root.is_dir()
                                else reference)
        family, _ = read_family(files)
        tensors = read_tower_tensors(files, family, layers_below(config.num_hidden_layers))
        tower = build_tower(config, tensors, reference)
        found = tensors_digest(tower.state_dict())
        if found != description["digest"]:
            raise PipelineError(f"the vision tower weights in model.vision = '{reference}' (digest {found[:12]}) are "
                                f"not those this model was trained with (digest {description['digest'][:12]}); "
                                f"restore them, or run `dvc repro` to train on the new ones.")
    return MLLMVisionTower(tower, description, embed_dim)
