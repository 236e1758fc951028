"""The captioner interface: a batch of images in, attribute-aware captions (or failures with a reason) out.

Backends differ in where the attributes come from (the dataset's own tags, an MLLM served by vLLM, an in-process
transformers model) but all fill the same `Attributes` schema, and all describe themselves by a `signature` that
keys the per-image cache: a change of backend, model, prompt or decoding settings never reuses stale captions.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from pipeline.captioning.attributes import Attributes


@dataclass(frozen=True)
class ImageToCaption:
    name: str
    category: str
    path: Path
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Caption:
    attributes: Attributes
    raw: str = ""  # the backend's own output (an MLLM's JSON), kept for inspection
    description: str = ""  # an MLLM's free-text sentence, when asked for one (caption.free_text)

    @property
    def text(self) -> str:
        """The sentence-level caption: rendered from the attributes, then the free-text description if any."""
        return ". ".join(part for part in (self.attributes.sentence(), self.description) if part)


@dataclass(frozen=True)
class CaptionFailure:
    reason: str


class Captioner(ABC):
    backend: str = ""
    model: str = ""
    prompt_version: str = ""

    def settings(self) -> dict[str, object]:
        """Decoding settings that change the output; part of the cache key."""
        return {}

    @property
    def signature(self) -> str:
        description = {"backend": self.backend, "model": self.model, "prompt_version": self.prompt_version,
                       "settings": self.settings()}
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]

    def input_key(self, item: ImageToCaption) -> str:
        """What besides the image bytes the output depends on (part of the cache key); nothing for an MLLM."""
        return ""

    def versions(self) -> dict[str, str]:
        """Versions of the model and software behind the captions, recorded in the stage report."""
        return {}

    def usage(self) -> dict[str, float]:
        """Work done so far (requests, tokens, ...), recorded in the stage report."""
        return {}

    def close(self) -> None:
        """Release what the backend holds (a server it started, a model in memory)."""

    def __enter__(self) -> Captioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def caption(self, batch: list[ImageToCaption]) -> list[Caption | CaptionFailure]:
        """One result per input, in order. Must not raise for a single bad image: return a CaptionFailure.

        Raise (a PipelineError) only when no further image can be captioned either, e.g. the server is gone.
        """
