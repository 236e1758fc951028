"""`RetrievalModel`: an open_clip model plus query composition, taking pre-decoded uint8 image tensors so that
decoding happens once per dataset (the image store) rather than once per epoch.

Texts are encoded over the batch's longest caption, not the whole context. CLIP's text tower attends causally and
pools at the end-of-text token, so the padding after a caption's end-of-text token never reaches its feature:
cutting the padding columns every caption of the batch has in common changes the result by floating-point rounding
only, and saves most of the text tower's FLOPs (captions are far shorter than the 77-token context)."""

from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from pipeline.models.composition import Combiner, Composition, QueryMode, normalised_sum
from pipeline.models.vision_tower import MLLMVisionTower

TOWER_PREFIX = "clip.visual.tower."  # an MLLM vision tower's weights in the model's state dict
TEXT_BUCKET = 8  # trimmed lengths are rounded up to a multiple of this, so compiled text graphs stay few
TRIMMABLE_POOLING = ("argmax", "eos", "first")  # pooled positions a trim keeps (not `last`, which moves)


def _pooling(tower: nn.Module) -> tuple[str | None, int | None]:
    """The text tower's pooling and end-of-text id, under either layout's attribute names."""
    return (getattr(tower, "pool_type", getattr(tower, "text_pool_type", None)),
            getattr(tower, "eos_id", getattr(tower, "text_eos_id", None)))


class RetrievalModel(nn.Module):
    """A CLIP model plus query composition; every output feature is L2-normalised."""

    def __init__(self, clip: nn.Module, arch: str, composition: Composition = "sum", target_ratio: float | None = None):
        super().__init__()
        self.clip = clip
        self.arch = arch
        self.target_ratio = target_ratio  # CLIP4Cir's targetpad before the architecture's resize; None = off
        self.trim_text = True  # False: every text over the whole context, as open_clip's encode_text does
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

    def image_encoder(self) -> str:
        """Which image encoder this is, in words (for reports and logs)."""
        visual = self.clip.visual
        if not isinstance(visual, MLLMVisionTower):
            return f"{self.arch}'s own image tower"
        described = visual.description
        return (f"{described['family']} vision tower of {described['reference']} (layer {described['layer']}, "
                f"{described['pooling']} pooling, {'fine-tuned' if visual.weights_in_checkpoint else 'frozen'})")

    def tower_by_reference(self) -> bool:
        """Whether the image tower is an MLLM's frozen one, whose weights its checkpoint names rather than holds:
        the state dict leaves them out (checkpoints, resumable epochs), and loading one does not expect them."""
        visual = self.clip.visual
        return isinstance(visual, MLLMVisionTower) and not visual.weights_in_checkpoint

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        if self.tower_by_reference():
            prefix = kwargs.get("prefix", "") + TOWER_PREFIX
            for key in [key for key in state if key.startswith(prefix)]:
                del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if not self.tower_by_reference():
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [key for key in result.missing_keys if not key.startswith(TOWER_PREFIX)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Error(s) in loading state_dict for RetrievalModel: missing keys {missing}, "
                               f"unexpected keys {result.unexpected_keys}.")
        return result._replace(missing_keys=missing)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] (as decoded by `image_loader`) -> normalised fp32 features (also under autocast, so
        losses are computed in fp32)."""
        x = (pixels.to(self.mean.device, torch.float32) / 255.0 - self.mean) / self.std
        return F.normalize(self.clip.encode_image(x).float(), dim=-1)

    @property
    def text_tower(self) -> nn.Module:
        """The module holding the text transformer: `clip.text` (open_clip's CustomTextCLIP), or the CLIP model
        itself (the classic layout, whose text modules are attributes of the CLIP)."""
        return self.clip.text if hasattr(self.clip, "text") else self.clip

    def text_length(self, tokens: torch.Tensor) -> int:
        """How many token columns the text tower must read: up to the batch's last non-padding token, rounded up
        to TEXT_BUCKET; the whole context when the tower cannot be trimmed (bidirectional attention, a padding
        mask or class token, last-position pooling, a Hugging Face tower). On a GPU this reads one number back."""
        tower, context = self.text_tower, tokens.shape[1]
        mask = getattr(tower, "attn_mask", None)
        if (not self.trim_text or not isinstance(mask, torch.Tensor) or mask.ndim != 2
                or getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False)
                or _pooling(tower)[0] not in TRIMMABLE_POOLING):
            return context
        last = int(self.token_counts(tokens).max()) if len(tokens) else 1
        return min(context, -(-max(last, 1) // TEXT_BUCKET) * TEXT_BUCKET)

    def token_counts(self, tokens: torch.Tensor) -> torch.Tensor:
        """[N]: each row's last non-padding position + 1 (its length up to and with the end-of-text token)."""
        used = tokens != getattr(self.text_tower, "pad_id", 0)
        return (used * torch.arange(1, tokens.shape[1] + 1, device=tokens.device)).amax(dim=1)

    def encode_texts(self, tokens: torch.Tensor) -> torch.Tensor:
        """int [N, context] tokens -> normalised fp32 features, the text tower run over `text_length` columns:
        the same feature as open_clip's encode_text up to floating-point rounding (tests/test_text_trim.py)."""
        length = self.text_length(tokens)  # before the copy: tokens still on the host cost no sync
        tokens = tokens.to(self.mean.device)
        if length == tokens.shape[1]:
            return F.normalize(self.clip.encode_text(tokens).float(), dim=-1)
        return F.normalize(self._encode_text_columns(tokens[:, :length]).float(), dim=-1)

    def _encode_text_columns(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip 3's encode_text (both layouts) with the positional embedding and causal mask cut to the
        tokens' length, which open_clip's own forward does not do. Batch size and length are marked dynamic, so a
        compiled text transformer compiles once for all of them rather than once per shape (a no-op when eager)."""
        tower, length = self.text_tower, tokens.shape[1]
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:length].to(cast)
        mask = tower.attn_mask[:length, :length]
        for tensor, dims in ((x, (0, 1)), (mask, (0, 1))):  # compiled: one graph for every batch and length
            for dim in dims:
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
        x = tower.ln_final(tower.transformer(x, attn_mask=mask))
        pooling, eos = _pooling(tower)
        pooled = text_global_pool(x, tokens, pooling, eos_token_id=eos)
        projection = tower.text_projection
        if projection is None:
            return pooled
        return projection(pooled) if isinstance(projection, nn.Linear) else pooled @ projection

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
