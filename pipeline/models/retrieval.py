"""`RetrievalModel`: an open_clip model plus query composition, taking pre-decoded uint8 image tensors so that
decoding happens once per dataset (the image store) rather than once per epoch."""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.composition import Combiner, Composition, QueryMode, normalised_sum


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
        return normalised_sum(image, text)

    def trainable_query_side(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """What stage 2 trains: the text tower's parameters and the combiner's (none for `sum`); the image tower
        stays frozen."""
        visual = {id(p) for p in self.clip.visual.parameters()}
        text = [p for n, p in self.clip.named_parameters() if id(p) not in visual and n != "logit_scale"
                and not n.startswith("logit_bias")]
        return text, list(self.combiner.parameters()) if self.combiner is not None else []
