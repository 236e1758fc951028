"""The `transformers` backend: an in-process Hugging Face MLLM, batched, JSON-constrained with xgrammar.

For models vLLM does not serve and machines without vLLM. Loads through `AutoProcessor` and
`AutoModelForImageTextToText` (LLaVA, LLaVA-NeXT, Qwen2-VL, InternVL, ...), exactly as a user's checkpoint
directory or Hub id loads. xgrammar's logits processor constrains decoding to the same JSON schema vLLM's
structured output uses, so both backends fill the schema the same way.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from importlib.metadata import version
from typing import Any

import torch
from PIL import Image

from pipeline.captioning.mllm import Decoding, Generation, MLLMCaptioner
from pipeline.captioning.schema import prompt
from pipeline.config import CaptionParams
from pipeline.device import compute_device
from pipeline.errors import PipelineError


class TransformersCaptioner(MLLMCaptioner):
    backend = "transformers"

    def __init__(self, params: CaptionParams, device: str | None = None):
        super().__init__(params)
        self.device = device or str(compute_device())
        self._model: Any = None
        self._processor: Any = None
        self._grammar: Any = None
        self._versions: dict[str, str] = {}

    def _load(self) -> None:
        if self._model is not None:
            return
        import transformers
        import xgrammar
        from transformers import AutoModelForImageTextToText, AutoProcessor

        p = self.params
        dtype = "auto" if p.dtype == "auto" else getattr(torch, p.dtype)
        try:
            self._processor = AutoProcessor.from_pretrained(p.model)
            self._model = AutoModelForImageTextToText.from_pretrained(p.model, dtype=dtype).to(self.device).eval()
        except (OSError, ValueError) as error:
            raise PipelineError(f"caption.model = {p.model!r} could not be loaded with transformers: "
                                f"{str(error).splitlines()[0]}") from None
        tokenizer = self._processor.tokenizer
        tokenizer.padding_side = "left"  # decoder-only batching: prompts end where generation starts
        vocab_size = self._model.config.get_text_config().vocab_size
        info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._grammar = xgrammar.GrammarCompiler(info).compile_json_schema(json.dumps(self.schema),
                                                                                 any_whitespace=False)
        self._versions = {"transformers": transformers.__version__, "xgrammar": version("xgrammar"),
                          "torch": torch.__version__}

    def versions(self) -> dict[str, str]:
        return self._versions

    def generate(self, images: list[bytes], decodings: list[Decoding]) -> list[Generation]:
        self._load()
        groups: dict[Decoding, list[int]] = defaultdict(list)
        for i, decoding in enumerate(decodings):
            groups[decoding].append(i)
        results: list[Generation | None] = [None] * len(images)
        for decoding, indices in groups.items():
            for i, generation in zip(indices, self._generate([images[i] for i in indices], decoding), strict=True):
                results[i] = generation
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _generate(self, images: list[bytes], decoding: Decoding) -> list[Generation]:
        from xgrammar.contrib.hf import LogitsProcessor

        conversation = [{"role": "user", "content": [{"type": "image"},
                                                     {"type": "text", "text": prompt(self.params.free_text)}]}]
        text = self._processor.apply_chat_template(conversation, add_generation_prompt=True)
        pictures = [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg in images]
        inputs = self._processor(images=pictures, text=[text] * len(pictures), return_tensors="pt",
                                 padding=True).to(self.device)
        sampling = decoding.temperature > 0
        if sampling:
            torch.manual_seed(decoding.seed)
        tokenizer = self._processor.tokenizer
        output = self._model.generate(
            **inputs, max_new_tokens=decoding.max_tokens, do_sample=sampling,
            temperature=decoding.temperature if sampling else None, top_p=None, top_k=None,
            logits_processor=[LogitsProcessor(self._grammar)],  # one per generate() call, as xgrammar requires
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        prompt_length = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        generations = []
        for row, n_prompt in zip(output[:, prompt_length:].tolist(), prompt_tokens, strict=True):
            ended = tokenizer.eos_token_id in row
            tokens = row[:row.index(tokenizer.eos_token_id)] if ended else row
            generations.append(Generation(
                text=tokenizer.decode(tokens, skip_special_tokens=True),
                finish_reason="stop" if ended or len(row) < decoding.max_tokens else "length",
                prompt_tokens=int(n_prompt), completion_tokens=len(tokens)))
        return generations

    def close(self) -> None:
        self._model = None
