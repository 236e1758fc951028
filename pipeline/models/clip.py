"""open_clip models: building the base model, the tokenizer, and self-describing checkpoints.

Every text encoder is an open_clip model's: any architecture and pretrained tag, a local checkpoint path, or the tiny
demo architecture registered from this package's `configs/`. The image encoder is the same model's image tower, or
with `model.vision` an MLLM's vision tower in its place (pipeline/models/vision_tower.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import open_clip
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from pipeline.config import ModelParams
from pipeline.errors import PipelineError
from pipeline.io import atomic_path
from pipeline.models.preprocessing import Preprocessing
from pipeline.models.retrieval import TOWER_PREFIX, RetrievalModel
from pipeline.models.vision_tower import MLLMVisionTower, load_tower, rebuild_tower, vision_preprocessing

CONFIG_DIR = Path(__file__).parent / "configs"


class _RandomInitNotice(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded" warning (it logs on the root logger), which every random
    init prints, including the ones built only to load a checkpoint into or to read the preprocessing from. Every
    other message, open_clip's included, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("No pretrained weights loaded")
                    and "open_clip" in record.pathname)


logging.getLogger().addFilter(_RandomInitNotice())


def checked_arch(arch: str) -> str:
    """`arch` if open_clip knows it (the package's own configs registered first); else one sentence."""
    if not set(p.stem for p in CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)
    if arch not in open_clip.list_models():
        raise PipelineError(f"model.arch = '{arch}' is not an open_clip architecture; allowed: any name in "
                            f"open_clip.list_models() or a JSON config in {CONFIG_DIR}.")
    return arch


def create_clip(params: ModelParams, seed: int) -> nn.Module:
    """The base open_clip model: pretrained tag, local checkpoint, or random init seeded by `seed`."""
    checked_arch(params.arch)
    pretrained = params.pretrained or None
    if pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) \
            and not Path(pretrained).exists():
        raise PipelineError(f"model.pretrained = '{pretrained}' looks like a path but no such file exists.")
    torch.manual_seed(seed)
    try:
        return open_clip.create_model(params.arch, pretrained=pretrained,
                                      force_quick_gelu=tag_needs_quick_gelu(params.arch, pretrained))
    except Exception as exc:  # download/parse failures come in many types; one sentence for all of them
        raise PipelineError(f"could not load model.pretrained = '{pretrained}' for model.arch = '{params.arch}': "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.") from exc


def tag_needs_quick_gelu(arch: str, pretrained: str | None) -> bool:
    """OpenAI's weights were trained with QuickGELU; open_clip builds `ViT-B-32` with GELU and only warns when
    given the `openai` tag, so the activation follows the tag here (as `ViT-B-32-quickgelu` would)."""
    return bool(pretrained and open_clip.get_pretrained_cfg(arch, pretrained).get("quick_gelu"))


def _uses_quick_gelu(clip: nn.Module) -> bool:
    return any(isinstance(m, QuickGELU) for m in clip.modules())


def create_model(params: ModelParams, seed: int) -> RetrievalModel:
    """The base model, composing queries by sum until stage 2 chooses its composition; with `model.vision`, the
    MLLM's vision tower (and a new projection, seeded after the CLIP) in place of the architecture's image tower."""
    target_ratio = params.target_ratio if params.preprocess == "targetpad" else None
    clip = create_clip(params, seed)
    if params.vision:
        clip.visual = load_tower(params.vision, params.vision_layer, params.vision_pooling, _embed_dim(params.arch))
    return RetrievalModel(clip, params.arch, target_ratio=target_ratio)


def _embed_dim(arch: str) -> int:
    return int(open_clip.get_model_config(arch)["embed_dim"])


def tokenizer_for(arch: str):
    return open_clip.get_tokenizer(checked_arch(arch))


def input_preprocessing(params: ModelParams) -> Preprocessing:
    """`preprocessing` of the model `params` build, without loading its weights: the architecture's defaults,
    updated (as open_clip's create_model does) by a pretrained tag's mean, std, interpolation and resize mode; with
    `model.vision`, the MLLM checkpoint's image-processor config."""
    checked_arch(params.arch)
    if params.vision:
        config = vision_preprocessing(params.vision)
    else:
        config = dict(open_clip.create_model(params.arch, pretrained=None).visual.preprocess_cfg)
        tag = open_clip.get_pretrained_cfg(params.arch, params.pretrained) if params.pretrained else {}
        config.update({k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag})
    target_ratio = params.target_ratio if params.preprocess == "targetpad" else None
    return json.loads(json.dumps({**config, "target_ratio": target_ratio}))


def save_checkpoint(directory: str | Path, model: RetrievalModel) -> None:
    """A state dict (loadable with weights_only=True) plus what rebuilding the module needs that the weights do
    not say: architecture, composition, activation (OpenAI weights use QuickGELU), the preprocessing of the
    pretrained tag, and an MLLM vision tower's description (a frozen one's weights stay in its checkpoint, named by
    reference and digest). Checkpoints are self-describing, so later stages need no model params of their own."""
    description = {"arch": model.arch, "composition": model.composition,
                   "quick_gelu": _uses_quick_gelu(model.clip), "preprocess": model.clip.visual.preprocess_cfg,
                   "target_ratio": model.target_ratio}
    if isinstance(model.clip.visual, MLLMVisionTower):
        description["vision"] = model.clip.visual.checkpoint_description()
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(description, indent=2) + "\n")


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu", root: Path = Path(".")
                    ) -> RetrievalModel:
    """The model a checkpoint directory describes. `root` is the repository a relative `model.vision` directory
    is relative to (the stages run there; `fashion-cir --root` may not)."""
    directory = Path(directory)
    path, description = directory / "model.pt", directory / "model.json"
    if not path.is_file() or not description.is_file():
        raise PipelineError(f"{path} is missing; run the stage that writes it first (dvc repro).")
    saved = json.loads(description.read_text())
    clip = open_clip.create_model(checked_arch(saved["arch"]), pretrained=None, force_quick_gelu=saved["quick_gelu"])
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "vision" in saved:
        tower = {k.removeprefix(TOWER_PREFIX): v for k, v in state.items() if k.startswith(TOWER_PREFIX)}
        in_checkpoint = saved["vision"]["weights_in_checkpoint"]
        clip.visual = rebuild_tower(saved["vision"], _embed_dim(saved["arch"]), tower if in_checkpoint else None,
                                    root)
    preprocess = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["preprocess"].items()}
    open_clip.set_model_preprocess_cfg(clip, preprocess)
    model = RetrievalModel(clip, saved["arch"], saved["composition"], saved.get("target_ratio"))
    model.load_state_dict(state)
    return model.to(device)
