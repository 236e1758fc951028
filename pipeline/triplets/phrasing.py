"""Modification texts of generated triplets written by an LLM instead of templates (`triplets.phrasing: mllm`).

The model sees the two garments' attribute JSON and the fields that differ, and answers with two differently
worded modification texts (FashionIQ has two per pair) in a small JSON schema, through the same vLLM server
client the `vllm` captioner uses. A request that fails or comes back malformed keeps the template texts and is
counted, so a flaky answer never stops the stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.captioning.attributes import Attributes
from pipeline.captioning.captions import attributes_lookup
from pipeline.captioning.mllm import Decoding
from pipeline.captioning.vllm_client import ChatClient, ChatRequest
from pipeline.config import CaptionParams
from pipeline.triplets.query_text import triplet_query_text

INSTRUCTIONS = (
    "Two garments are described as JSON. Reference: {reference}. Target: {target}. They differ in: {fields}. "
    "A shopper looking at the reference asks for the target. Write two different short requests (under 12 words "
    "each) that name only what changes, in the style \"is red with long sleeves\" or \"has a v-neck and is "
    "shorter\". Answer as JSON with fields caption1 and caption2."
)
MAX_TOKENS = 96


class Phrasings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    caption1: Annotated[str, Field(min_length=1, max_length=100)]
    caption2: Annotated[str, Field(min_length=1, max_length=100)]


def phrasing_messages(reference: Attributes, target: Attributes, fields: list[str]) -> list[dict]:
    def describe(attributes: Attributes) -> str:
        return json.dumps({k: v for k, v in attributes.to_dict().items() if v not in (None, [], ())})

    text = INSTRUCTIONS.format(reference=describe(reference), target=describe(target), fields=", ".join(fields))
    return [{"role": "user", "content": text}]


def phrase(client: ChatClient, pairs: list[tuple[Attributes, Attributes, list[str]]]
           ) -> list[tuple[str, str] | None]:
    """Two modification texts per (reference, target, changed fields); None where the model's answer was unusable."""
    schema = Phrasings.model_json_schema()
    answers = client.complete([ChatRequest(phrasing_messages(ref, tgt, fields), schema, Decoding(MAX_TOKENS, 0.0, 0))
                               for ref, tgt, fields in pairs])
    results: list[tuple[str, str] | None] = []
    for answer in answers:
        try:
            parsed = Phrasings.model_validate_json(answer.text)
            results.append((parsed.caption1.strip(), parsed.caption2.strip()))
        except ValidationError:
            results.append(None)
    return results


def rephrase_with_llm(generated: pd.DataFrame, captions: pd.DataFrame, caption: CaptionParams, model: str,
                      log_dir: Path | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Generated triplets with their two modification texts (and query text) written by `model` on a vLLM server;
    rows whose answer was unusable keep the template texts."""
    attributes = attributes_lookup(captions)
    pairs = [(attributes[(k, r)], attributes[(k, t)], attributes[(k, r)].changed_fields(attributes[(k, t)]))
             for k, r, t in zip(generated["category"], generated["reference"], generated["target"], strict=True)]
    client = ChatClient(caption, model, log_path=log_dir / "vllm-server.log" if log_dir else None)
    try:
        texts = phrase(client, pairs) if pairs else []
    finally:
        client.close()
    table = generated.copy()
    for i, worded in enumerate(texts):
        if worded is not None:
            table.loc[i, ["caption1", "caption2"]] = worded
    table["query_text"] = [triplet_query_text(c1, c2, prompt) for c1, c2, prompt
                           in zip(table["caption1"], table["caption2"], table["prompt"], strict=True)]
    return table, {"phrased_by_llm": sum(t is not None for t in texts),
                   "phrasing_failed": sum(t is None for t in texts)}
