"""Modification texts of generated triplets written by an LLM instead of templates (`triplets.phrasing: mllm`).

The model sees the two garments' attribute JSON and the fields that differ, and answers with two differently
worded modification texts (FashionIQ has two per pair) in a small JSON schema, through the same vLLM server
client the `vllm` captioner uses. A request that fails or comes back malformed keeps the template texts and is
counted, so a flaky answer never stops the stage.
"""

from __future__ import annotations

import json
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.attributes import Attributes
from pipeline.captioning.mllm import Decoding
from pipeline.captioning.vllm_client import ChatClient, ChatRequest

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
