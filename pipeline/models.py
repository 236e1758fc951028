"""open_clip model loading and composed-query encoding.

Every encoder is an open_clip model: any architecture and pretrained tag, a local checkpoint path, or the tiny
demo architecture registered from this package's `model_configs/`. `RetrievalModel` wraps it with the query
composition (sum of normalised features, or CLIP4Cir's combiner) and takes pre-decoded uint8 image tensors, so
decoding happens once per stage rather than once per epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import open_clip
import torch
import torch.nn.functional as F
from torch import nn
from open_clip.transformer import QuickGELU
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from pipeline.config import ModelParams
from pipeline.errors import PipelineError
from pipeline.io import atomic_path

CONFIG_DIR = Path(__file__).parent / "model_configs"
QueryMode = Literal["composed", "text", "image"]
Composition = Literal["sum", "combiner"]


def _quiet_random_inits() -> None:
    """open_clip warns "no pretrained weights loaded" for every random init, including the ones built only to load
    a checkpoint into or to read the preprocessing from."""
    logging.getLogger().setLevel(logging.ERROR)


def _register_builtin_configs() -> None:
    if not set(p.stem for p in CONFIG_DIR.glob("*.json")) <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


class Combiner(nn.Module):
    """CLIP4Cir's combiner: a learned mixture of image and text features plus a gated residual of each."""

    def __init__(self, dim: int, projection_dim: int, hidden_dim: int):
        super().__init__()
        self.text_projection = nn.Linear(dim, projection_dim)
        self.image_projection = nn.Linear(dim, projection_dim)
        self.dropout = nn.Dropout(0.5)
        self.combiner_layer = nn.Linear(2 * projection_dim, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, dim)
        self.dynamic_scalar = nn.Sequential(nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(0.5),
                                            nn.Linear(hidden_dim, 1), nn.Sigmoid())

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        projected = torch.cat([self.dropout(F.relu(self.text_projection(text))),
                               self.dropout(F.relu(self.image_projection(image)))], dim=-1)
        combined = self.output_layer(self.dropout(F.relu(self.combiner_layer(projected))))
        gate = self.dynamic_scalar(projected)
        return combined + gate * text + (1 - gate) * image


class RetrievalModel(nn.Module):
    """A CLIP model plus query composition; every output feature is L2-normalised."""

    def __init__(self, clip: nn.Module, arch: str, composition: Composition = "sum", target_ratio: float | None = None):
        super().__init__()
        self.clip = clip
        self.arch = arch
        self.target_ratio = target_ratio  # CLIP4Cir's targetpad before the architecture's resize; None = off
        self.embed_dim = int(open_clip.get_model_config(arch)["embed_dim"])
        self.composition: Composition = "sum"
        self.combiner: Combiner | None = None
        self.set_composition(composition)
        cfg = clip.visual.preprocess_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)

    def set_composition(self, composition: Composition) -> None:
        """Switch the query composition; a combiner starts from the current torch RNG state."""
        self.composition = composition
        self.combiner = Combiner(self.embed_dim, 4 * self.embed_dim, 8 * self.embed_dim) \
            if composition == "combiner" else None

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] (as decoded by `image_loader`) -> normalised fp32 features (also under autocast, so
        losses are computed in fp32)."""
        x = (pixels.to(self.mean.device, torch.float32) / 255.0 - self.mean) / self.std
        return F.normalize(self.clip.encode_image(x).float(), dim=-1)

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(tokens.to(self.mean.device)).float(), dim=-1)

    def forward(self, pixels: torch.Tensor | None = None, tokens: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both encoders in one call (None where not asked), the form DistributedDataParallel wraps."""
        return (None if pixels is None else self.encode_images(pixels),
                None if tokens is None else self.encode_texts(tokens))

    def compose(self, image: torch.Tensor, text: torch.Tensor, mode: QueryMode = "composed") -> torch.Tensor:
        """Composed query from normalised reference-image and text features."""
        if mode == "text":
            return text
        if mode == "image":
            return image
        if self.combiner is not None:
            return F.normalize(self.combiner(image, text), dim=-1)
        return F.normalize(image + text, dim=-1)

    def trainable_query_side(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """What stage 2 trains: the text tower's parameters and the combiner's (none for `sum`); the image tower
        stays frozen."""
        visual = {id(p) for p in self.clip.visual.parameters()}
        text = [p for n, p in self.clip.named_parameters() if id(p) not in visual and n != "logit_scale"
                and not n.startswith("logit_bias")]
        return text, list(self.combiner.parameters()) if self.combiner is not None else []


def create_clip(params: ModelParams, seed: int) -> nn.Module:
    """The base open_clip model: pretrained tag, local checkpoint, or random init seeded by `seed`."""
    _register_builtin_configs()
    if params.arch not in open_clip.list_models():
        raise PipelineError(f"model.arch = '{params.arch}' is not an open_clip architecture; allowed: any name in "
                            f"open_clip.list_models() or a JSON config in {CONFIG_DIR}.")
    pretrained = params.pretrained or None
    if pretrained and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))) \
            and not Path(pretrained).exists():
        raise PipelineError(f"model.pretrained = '{pretrained}' looks like a path but no such file exists.")
    torch.manual_seed(seed)
    _quiet_random_inits()
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
    """The base model, composing queries by sum until stage 2 chooses its composition."""
    target_ratio = params.target_ratio if params.preprocess == "targetpad" else None
    return RetrievalModel(create_clip(params, seed), params.arch, target_ratio=target_ratio)


def tokenizer_for(arch: str):
    _register_builtin_configs()
    return open_clip.get_tokenizer(arch)


class TargetPad:
    """CLIP4Cir's targetpad: pad an image whose aspect ratio is at least `target_ratio` with black, evenly on both
    sides, until its ratio is `target_ratio` (not to a square); less elongated images pass unchanged."""

    def __init__(self, target_ratio: float):
        self.target_ratio = target_ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        horizontal, vertical = max(int((scaled - w) / 2), 0), max(int((scaled - h) / 2), 0)
        return TF.pad(image, [horizontal, vertical, horizontal, vertical], fill=0, padding_mode="constant")

    def __repr__(self) -> str:
        return f"TargetPad(target_ratio={self.target_ratio})"


Preprocessing = dict  # open_clip's preprocess_cfg (size, mean, std, interpolation, resize_mode) + target_ratio


def preprocessing(model: RetrievalModel) -> Preprocessing:
    """What `model` expects done to an image before normalisation, as plain JSON values (so a stored copy compares
    equal): the architecture's preprocess_cfg plus CLIP4Cir's targetpad ratio (None = off)."""
    return json.loads(json.dumps({**model.clip.visual.preprocess_cfg, "target_ratio": model.target_ratio}))


def input_preprocessing(params: ModelParams) -> Preprocessing:
    """`preprocessing` of the model `params` build, without loading its weights: the architecture's defaults,
    updated (as open_clip's create_model does) by a pretrained tag's mean, std, interpolation and resize mode."""
    _register_builtin_configs()
    if params.arch not in open_clip.list_models():
        raise PipelineError(f"model.arch = '{params.arch}' is not an open_clip architecture; allowed: any name in "
                            f"open_clip.list_models() or a JSON config in {CONFIG_DIR}.")
    _quiet_random_inits()
    config = dict(open_clip.create_model(params.arch, pretrained=None).visual.preprocess_cfg)
    tag = open_clip.get_pretrained_cfg(params.arch, params.pretrained) if params.pretrained else {}
    config.update({k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag})
    target_ratio = params.target_ratio if params.preprocess == "targetpad" else None
    return json.loads(json.dumps({**config, "target_ratio": target_ratio}))


def image_loader(preprocess: Preprocessing) -> transforms.Compose:
    """The architecture's own preprocessing up to (not including) normalisation, producing uint8 tensors, after
    CLIP4Cir's targetpad when `preprocess` asks for it."""
    size = preprocess["size"]
    full = open_clip.image_transform(size if isinstance(size, int) else tuple(size), is_train=False,
                                     mean=tuple(preprocess["mean"]), std=tuple(preprocess["std"]),
                                     resize_mode=preprocess["resize_mode"], interpolation=preprocess["interpolation"])
    steps = [t for t in full.transforms if not isinstance(t, transforms.Normalize)]
    pad = [TargetPad(preprocess["target_ratio"])] if preprocess.get("target_ratio") else []
    return transforms.Compose([*pad, *steps, transforms.Lambda(_to_uint8)])


def _to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels * 255).round().to(torch.uint8)


def save_checkpoint(directory: str | Path, model: RetrievalModel) -> None:
    """A state dict (loadable with weights_only=True) plus what rebuilding the module needs that the weights do
    not say: architecture, composition, activation (OpenAI weights use QuickGELU) and the preprocessing of the
    pretrained tag. Checkpoints are self-describing, so later stages need no model params of their own."""
    description = {"arch": model.arch, "composition": model.composition,
                   "quick_gelu": _uses_quick_gelu(model.clip), "preprocess": model.clip.visual.preprocess_cfg,
                   "target_ratio": model.target_ratio}
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        torch.save(model.state_dict(), tmp / "model.pt")
        (tmp / "model.json").write_text(json.dumps(description, indent=2) + "\n")


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> RetrievalModel:
    directory = Path(directory)
    path, description = directory / "model.pt", directory / "model.json"
    if not path.is_file() or not description.is_file():
        raise PipelineError(f"{path} is missing; run the stage that writes it first (dvc repro).")
    saved = json.loads(description.read_text())
    _register_builtin_configs()
    _quiet_random_inits()
    clip = open_clip.create_model(saved["arch"], pretrained=None, force_quick_gelu=saved["quick_gelu"])
    preprocess = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["preprocess"].items()}
    open_clip.set_model_preprocess_cfg(clip, preprocess)
    model = RetrievalModel(clip, saved["arch"], saved["composition"], saved.get("target_ratio"))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device)
