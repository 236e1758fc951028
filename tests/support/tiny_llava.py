"""A tiny random-weight LLaVA checkpoint, built entirely in code (no hub access), for tests.

It is a test double for the one boundary we cannot reach here: real model weights. Everything else is real:
the directory is a normal Hugging Face checkpoint (config, safetensors, tokenizer, processor, chat template)
that loads like a user's checkpoint with ``LlavaForConditionalGeneration`` / ``AutoModelForImageTextToText``
+ ``AutoProcessor`` and is served by a real vLLM (``vllm.entrypoints.openai.api_server --model DIR``).

Shape (as vLLM's CPU backend accepts it): Llama text model, hidden 64, 2 layers, 2 heads (head size 32, vLLM's
CPU attention minimum); CLIP vision tower, image 32, patch 8 (16 image tokens), hidden 64, 2 layers; a byte-level
BPE tokenizer trained on a few fashion sentences. About 237k parameters, under 1 MB, built in a few seconds.

    python -m tests.support.tiny_llava OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", IMAGE_TOKEN]
IMAGE_SIZE = 32
PATCH_SIZE = 8
SEED = 0

# Renders image parts as "<image>\n", text parts as text; "USER: ... ASSISTANT:" turns.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{ 'USER: ' }}"
    "{%- elif message['role'] == 'assistant' -%}{{ 'ASSISTANT: ' }}"
    "{%- endif -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{ '</s>' }}{%- endif -%}"
    "{{ ' ' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}ASSISTANT:{%- endif -%}"
)

VOCAB_WORDS = (
    "black white grey red pink orange yellow green blue navy purple brown beige "
    "solid striped dotted checked floral graphic "
    "sleeveless short long sleeves round neck v-neck square high "
    "mini knee-length maxi cropped hip-length tunic-length "
    "dress shirt toptee cotton"
)

CORPUS = [
    VOCAB_WORDS,
    "USER: <image>\nDescribe the garment as JSON. ASSISTANT:",
    '{"category": "dress", "colors": ["black", "white"], "sleeves": "sleeveless", "length": "maxi"}',
    '{"category":"shirt","colors":["navy","grey"],"pattern":"striped","neckline":"v-neck","sleeves":"long"}',
    '{"category": "toptee", "colors": ["red"], "pattern": "graphic", "neckline": "round neck", "fit": "cropped"}',
    "a short floral dress in pink and beige cotton with a square neck, knee-length",
    "is darker, has long sleeves and a high neck; is more colorful and shorter, mini length",
    "a blue checked shirt with short sleeves; a yellow dotted toptee, hip-length; a green tunic-length top",
    "orange, purple, brown: solid colors. [0, 1, 2] {} [] true false null",
]


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    # transformers 5 calls them extra_special_tokens, 4 additional_special_tokens.
    extra = "extra_special_tokens" if _transformers_major() >= 5 else "additional_special_tokens"
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        **{extra: [IMAGE_TOKEN]},
        model_max_length=2048,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return fast


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


def _rename_vision_keys(weights_file: Path) -> int:
    """transformers 5 saves the CLIP tower as ``vision_tower.embeddings...``; vLLM loads the llava-hf naming
    ``vision_tower.vision_model.embeddings...``. transformers reads both (its checkpoint conversion mapping)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(weights_file), framework="pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    renamed = {}
    n = 0
    for key, value in tensors.items():
        head, sep, rest = key.partition("vision_tower.")
        if sep and head in ("", "model.") and not rest.startswith("vision_model."):
            key = f"{head}vision_tower.vision_model.{rest}"
            n += 1
        renamed[key] = value.contiguous()
    if n:
        save_file(renamed, str(weights_file), metadata=metadata or {"format": "pt"})
    return n


def build_tiny_llava(out_dir: Path) -> Path:
    """Write a tiny random-weight LLaVA checkpoint to ``out_dir`` (created) and return it. Deterministic."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    try:  # transformers 5: the PIL-backed processor needs no torchvision ops
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # pragma: no cover - transformers 4
        ImageProcessor = CLIPImageProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)

    tokenizer = _train_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    vision_config = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=64,
    )
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_token_id,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        projector_hidden_act="gelu",
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    image_processor = ImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )

    bars_were_enabled = is_progress_bar_enabled()
    disable_progress_bar()  # "Writing model shards" for a 1 MB file is noise
    try:
        model.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    finally:
        if bars_were_enabled:
            enable_progress_bar()
    _rename_vision_keys(out_dir / "model.safetensors")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tests.support.tiny_llava OUT_DIR", file=sys.stderr)
        return 2
    out = build_tiny_llava(Path(argv[0]))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
