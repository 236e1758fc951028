"""What every MLLM backend shares: padded-square JPEG inputs, the schema prompt, parsing, retries, usage counts.

A backend only implements `generate` (one answer per image for one attempt); this class turns answers into
captions, asks again for the ones that came back malformed or truncated, and records the rest as failures with
their reason, so one bad answer never stops a run.
"""

from __future__ import annotations

import base64
import io
from abc import abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from pipeline.captioning.base import Caption, Captioner, CaptionFailure, ImageToCaption
from pipeline.captioning.schema import MalformedOutput, json_schema, parse_answer, prompt, prompt_version
from pipeline.config import CaptionParams

PAD_COLOR = (255, 255, 255)  # product photos are shot on white; padding with it adds no edge the model could read


def square_jpeg(path: str | Path, size: int, quality: int = 90) -> bytes:
    """The image padded to a square (never cropped) and resized to `size`, as JPEG bytes.

    LLaVA-1.5's processor centre-crops non-square images, which cuts off necklines and hems of tall product
    photos; padding first keeps the whole garment in view.
    """
    with Image.open(path) as image:
        image = image.convert("RGB")
        side = max(image.size)
        square = ImageOps.pad(image, (side, side), color=PAD_COLOR)
    square = square.resize((size, size), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    square.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def chat_messages(jpeg: bytes, free_text: bool) -> list[dict]:
    """The OpenAI-style chat request for one image: the same for the server, offline vLLM and transformers."""
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(jpeg)}},
        {"type": "text", "text": prompt(free_text)},
    ]}]


@dataclass(frozen=True)
class Decoding:
    """Sampling settings of one attempt."""

    max_tokens: int
    temperature: float
    seed: int


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str = "stop"  # "length" when max_tokens cut the answer short
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""  # the backend refused this one request (e.g. an image too large for the model's context)


class MLLMCaptioner(Captioner):
    """Base of the vllm, vllm-offline and transformers backends."""

    def __init__(self, params: CaptionParams):
        self.params = params
        self.model = params.model
        self.prompt_version = prompt_version(params.free_text)
        self.schema = json_schema(params.free_text)
        self._usage: Counter[str] = Counter()

    def settings(self) -> dict[str, object]:
        p = self.params
        return {"max_tokens": p.max_tokens, "temperature": p.temperature, "image_size": p.image_size,
                "free_text": p.free_text, "dtype": p.dtype}  # not retries: failures are never cached

    def usage(self) -> dict[str, float]:
        return dict(self._usage)

    def decoding(self, attempt: int, truncated: bool) -> Decoding:
        """Attempt 0 decodes as configured. A retry of a truncated answer gets twice the tokens; a retry of a
        malformed one samples (temperature at least 0.7, seeded by the attempt), since greedy decoding would only
        repeat the same answer."""
        p = self.params
        if attempt == 0:
            return Decoding(p.max_tokens, p.temperature, 0)
        max_tokens = p.max_tokens * 2 ** attempt if truncated else p.max_tokens
        return Decoding(max_tokens, max(p.temperature, 0.7), attempt)

    @abstractmethod
    def generate(self, images: list[bytes], decodings: list[Decoding]) -> list[Generation]:
        """One answer per (JPEG image, decoding settings), in order."""

    def caption(self, batch: list[ImageToCaption]) -> list[Caption | CaptionFailure]:
        images = [square_jpeg(item.path, self.params.image_size) for item in batch]
        results: list[Caption | CaptionFailure | None] = [None] * len(batch)
        truncated = [False] * len(batch)
        pending = list(range(len(batch)))
        for attempt in range(self.params.retries + 1):
            if not pending:
                break
            answers = self.generate([images[i] for i in pending],
                                    [self.decoding(attempt, truncated[i]) for i in pending])
            still: list[int] = []
            for i, answer in zip(pending, answers, strict=True):
                self._count(answer, retry=attempt > 0)
                truncated[i] = answer.finish_reason == "length"
                try:
                    attributes, description = parse_answer(answer.text, batch[i].category, self.params.free_text)
                    results[i] = Caption(attributes, raw=answer.text, description=description)
                except MalformedOutput as error:
                    reason = (answer.error or (f"answer cut off at {answer.completion_tokens} tokens" if truncated[i]
                                               else str(error)))
                    results[i] = CaptionFailure(f"{reason} (after {attempt + 1} attempts)")
                    still.append(i)
            pending = still
        return [r for r in results if r is not None]

    def _count(self, answer: Generation, retry: bool) -> None:
        self._usage["requests"] += 1
        self._usage["retries"] += int(retry)
        self._usage["prompt_tokens"] += answer.prompt_tokens
        self._usage["completion_tokens"] += answer.completion_tokens
