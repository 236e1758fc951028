"""Tiny random-weight MLLM checkpoints of each family whose vision tower can be the image encoder, built in code (no
hub access), in the key layouts published checkpoints use.

A test double for the one boundary we cannot reach here, real MLLM weights; everything else is real: each directory is
a transformers checkpoint (config.json, sharded safetensors with their index, the image processor's config) written
from the real model class, with random weights, and loaded by exactly the code a user's checkpoint goes through.

    family       model class                          tower tensors, published layout     image processor
    llava        LlavaForConditionalGeneration        vision_tower.vision_model.*  (llava-hf)   CLIPImageProcessor
    llava_next   LlavaNextForConditionalGeneration    vision_tower.vision_model.*  (llava-hf)   LlavaNextImageProcessor
    internvl     InternVLForConditionalGeneration     vision_tower.*               (-hf)        GotOcr2ImageProcessor
    blip2        Blip2ForConditionalGeneration        vision_model.*               (Salesforce) BlipImageProcessor

`layout="transformers"` writes transformers >= 4.52's in-memory naming instead (`model.vision_tower.*`), the other
layout a LLaVA or InternVL checkpoint saved by a recent transformers may have. The tower's tensors go to one shard and
the language model's to another, as in a real multi-gigabyte checkpoint, so a test can show the second is never read.

    python -m tests.support.tiny_mllms FAMILY OUT_DIR [--image-size 64 --patch-size 16 --hidden 128 --layers 4]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FAMILIES = ("llava", "llava_next", "internvl", "blip2")
TOWER_SHARD, LANGUAGE_SHARD = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _model(family: str, image_size: int, patch_size: int, hidden: int, layers: int, heads: int):
    """The whole MLLM, random weights, a one-layer language model of width 32."""
    import transformers as tf

    tower = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden, intermediate_size=4 * hidden,
                 num_hidden_layers=layers, num_attention_heads=heads)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2)
    if family in ("llava", "llava_next"):
        config_class, model_class = ((tf.LlavaConfig, tf.LlavaForConditionalGeneration) if family == "llava" else
                                     (tf.LlavaNextConfig, tf.LlavaNextForConditionalGeneration))
        extra = {"image_grid_pinpoints": [[image_size, image_size], [image_size, 2 * image_size]]} \
            if family == "llava_next" else {}
        config = config_class(vision_config=tf.CLIPVisionConfig(**tower), text_config=tf.LlamaConfig(**text),
                              image_token_index=63, vision_feature_layer=-2, **extra)
        return model_class(config)
    if family == "internvl":
        vision = tf.InternVLVisionConfig(**{**tower, "image_size": [image_size] * 2, "patch_size": [patch_size] * 2})
        config = tf.InternVLConfig(vision_config=vision, text_config=tf.Qwen2Config(**text), image_token_id=63,
                                   downsample_ratio=0.5)
        return tf.InternVLForConditionalGeneration(config)
    if family == "blip2":
        qformer = tf.Blip2QFormerConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        intermediate_size=64, encoder_hidden_size=hidden)
        opt = tf.OPTConfig(vocab_size=64, hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                           word_embed_proj_dim=32)
        # initializer_range: BLIP-2's default (1e-10) assumes pretrained weights are loaded over it; 0.02, as CLIP's
        # and InternViT's configs have, so that a tower trained from scratch (the demo's comparison) can learn
        vision = tf.Blip2VisionConfig(**tower, initializer_range=0.02)
        config = tf.Blip2Config(vision_config=vision.to_dict(),
                                qformer_config=qformer.to_dict(), text_config=opt.to_dict(), num_query_tokens=4)
        return tf.Blip2ForConditionalGeneration(config)
    raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")


def _image_processor(family: str, image_size: int):
    import transformers as tf

    side = {"height": image_size, "width": image_size}
    if family == "llava":
        return tf.CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=side, do_center_crop=True,
                                     image_mean=OPENAI_MEAN, image_std=OPENAI_STD, resample=3)
    if family == "llava_next":
        return tf.LlavaNextImageProcessor(size={"shortest_edge": image_size}, crop_size=side, do_center_crop=True,
                                          image_mean=OPENAI_MEAN, image_std=OPENAI_STD, resample=3,
                                          image_grid_pinpoints=[[image_size, image_size],
                                                                [image_size, 2 * image_size]])
    if family == "internvl":
        return tf.GotOcr2ImageProcessor(size=side, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                                        crop_to_patches=False, resample=3)
    return tf.BlipImageProcessor(size=side, image_mean=OPENAI_MEAN, image_std=OPENAI_STD, resample=3)


def tower_prefix(family: str, layout: str) -> str:
    """Where the checkpoint keeps the vision tower's tensors."""
    if family == "blip2":
        return "vision_model."
    if layout == "transformers":
        return "model.vision_tower."
    return "vision_tower.vision_model." if family in ("llava", "llava_next") else "vision_tower."


def _published_name(name: str, family: str, layout: str) -> str:
    """A tensor name of transformers' save_pretrained (5.x: `vision_tower.embeddings...`, `language_model.model...`)
    in the layout asked for."""
    for saved_prefix in ("vision_tower.", "vision_model."):
        if name.startswith(saved_prefix):
            inner = name[len(saved_prefix):].removeprefix("vision_model.")
            return tower_prefix(family, layout) + inner
    if layout == "transformers" and family != "blip2":
        if name.startswith("language_model.lm_head."):
            return name.removeprefix("language_model.")
        for old, new in (("language_model.model.", "model.language_model."),
                         ("language_model.", "model.language_model."),
                         ("multi_modal_projector.", "model.multi_modal_projector.")):
            if name.startswith(old):
                return new + name[len(old):]
    return name


def build_tiny_mllm(family: str, out_dir: Path, image_size: int = 32, patch_size: int = 8, hidden: int = 32,
                    layers: int = 3, heads: int = 2, layout: str = "published", seed: int = 0) -> Path:
    """Write a tiny random-weight checkpoint of `family` to `out_dir` (created) and return it. Deterministic."""
    import tempfile

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file
    from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = _model(family, image_size, patch_size, hidden, layers, heads).eval()
    bars = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory() as scratch:
            model.save_pretrained(scratch)  # the real config.json and the tensors under save_pretrained's names
            with safe_open(str(Path(scratch) / "model.safetensors"), framework="pt") as handle:
                tensors = {_published_name(name, family, layout): handle.get_tensor(name) for name in handle.keys()}
            (out_dir / "config.json").write_text((Path(scratch) / "config.json").read_text())
    finally:
        if bars:
            enable_progress_bar()
    prefix = tower_prefix(family, layout)
    shards = {TOWER_SHARD: {n: t.contiguous() for n, t in tensors.items() if n.startswith(prefix)},
              LANGUAGE_SHARD: {n: t.contiguous() for n, t in tensors.items() if not n.startswith(prefix)}}
    weight_map = {}
    for shard, chosen in shards.items():
        save_file(chosen, str(out_dir / shard), metadata={"format": "pt"})
        weight_map.update({name: shard for name in chosen})
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    _image_processor(family, image_size).save_pretrained(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--layout", choices=("published", "transformers"), default="published")
    args = parser.parse_args(argv)
    print(build_tiny_mllm(args.family, args.out_dir, args.image_size, args.patch_size, args.hidden, args.layers,
                          args.heads, args.layout))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
