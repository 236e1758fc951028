"""The MLLM side of captioning that needs no model: schema, prompt, parsing, padded-square images, retries."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from pipeline.captioning.base import Caption, CaptionFailure, ImageToCaption
from pipeline.captioning.mllm import Decoding, Generation, MLLMCaptioner, chat_messages, square_jpeg
from pipeline.captioning.schema import MalformedOutput, json_schema, parse_answer, prompt, prompt_version
from pipeline.config import CaptionParams

GOOD = {"category": "shirt", "colors": ["navy", "white"], "pattern": "striped", "material": "cotton",
        "sleeves": "long sleeves", "neckline": "v-neck", "length": "hip-length", "fit": None,
        "details": ["front buttons"]}


def test_schema_has_closed_vocabularies_and_requires_every_field():
    schema = json_schema(free_text=False)
    assert set(schema["required"]) == set(GOOD)
    assert schema["additionalProperties"] is False
    assert "navy" in json.dumps(schema["properties"]["colors"])
    assert "description" in json_schema(free_text=True)["required"]


def test_prompt_version_changes_with_the_prompt():
    assert prompt_version(False) != prompt_version(True)
    assert "neckline" in prompt(False) and "description" in prompt(True)


def test_parse_answer_fills_attributes_and_keeps_the_dataset_category():
    attributes, description = parse_answer(json.dumps({**GOOD, "category": "dress"}), "shirt", free_text=False)
    assert attributes.category == "shirt" and attributes.colors == ("navy", "white")
    assert attributes.accent == "white" and description == ""
    assert attributes.sentence() == ("a navy cotton striped shirt with white stripes, long sleeves, a v-neck, "
                                     "a hip-length cut and front buttons")


@pytest.mark.parametrize("text, reason", [
    ('{"category": "shirt", "colors": ["navy"', "not valid JSON"),
    (json.dumps({**GOOD, "colors": ["teal"]}), "colors.0"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "pattern"}), "pattern"),
    (json.dumps({**GOOD, "price": 3}), "price"),
])
def test_malformed_answers_say_why(text, reason):
    with pytest.raises(MalformedOutput, match=reason.replace(".", r"\.")):
        parse_answer(text, "shirt", free_text=False)


def test_free_text_description_is_appended_to_the_caption():
    attributes, description = parse_answer(json.dumps({**GOOD, "description": "A crisp office shirt."}), "shirt",
                                           free_text=True)
    caption = Caption(attributes, description=description)
    assert caption.text.endswith("front buttons. A crisp office shirt.")


def test_square_jpeg_pads_instead_of_cropping(tmp_path):
    tall = Image.new("RGB", (40, 100), (200, 0, 0))
    tall.save(tmp_path / "tall.png")
    image = Image.open(io.BytesIO(square_jpeg(tmp_path / "tall.png", 50)))
    assert image.format == "JPEG" and image.size == (50, 50)
    left, middle = image.getpixel((1, 25)), image.getpixel((25, 25))
    assert min(left) > 240  # white padding at the sides
    assert middle[0] > 150 and middle[1] < 60  # the garment, whole, in the middle
    assert image.getpixel((25, 1))[0] > 150  # top row is garment: nothing was cropped away


def test_chat_request_carries_the_image_and_the_prompt():
    content = chat_messages(b"jpeg", free_text=False)[0]["content"]
    assert content[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert content[1]["text"] == prompt(False)


class ScriptedAnswers(MLLMCaptioner):
    """Test double for a model's answers (the boundary a random-weight model cannot script): each image gets
    its answers in turn, one per attempt, and every call is recorded."""

    backend = "scripted"

    def __init__(self, params: CaptionParams, answers: dict[str, list[Generation]]):
        super().__init__(params)
        self.answers = answers
        self.calls: list[tuple[str, Decoding]] = []

    def generate(self, images: list[bytes], decodings: list[Decoding]) -> list[Generation]:
        out = []
        for image, decoding in zip(images, decodings, strict=True):
            name = next(n for n, script in self.answers.items() if script and self._jpeg[n] == image)
            self.calls.append((name, decoding))
            out.append(self.answers[name].pop(0))
        return out


def _items(tmp_path, names):
    items, jpegs = [], {}
    for i, name in enumerate(names):
        path = tmp_path / f"{name}.png"
        Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(path)
        items.append(ImageToCaption(name, "shirt", path))
        jpegs[name] = square_jpeg(path, 32)
    return items, jpegs


def test_malformed_and_truncated_answers_are_retried_then_recorded(tmp_path):
    params = CaptionParams(backend="vllm", image_size=32, retries=2, max_tokens=10)
    good = Generation(json.dumps(GOOD), completion_tokens=40)
    cut = Generation('{"category": "sh', finish_reason="length", completion_tokens=10)
    captioner = ScriptedAnswers(params, {"ok": [good], "fixed": [cut, good], "hopeless": [
        Generation("nonsense"), Generation("nonsense"), Generation("{}")]})
    items, captioner._jpeg = _items(tmp_path, ["ok", "fixed", "hopeless"])
    results = captioner.caption(items)
    assert isinstance(results[0], Caption) and isinstance(results[1], Caption)
    assert isinstance(results[2], CaptionFailure) and "after 3 attempts" in results[2].reason
    decodings = {name: [d for n, d in captioner.calls if n == name] for name in ("fixed", "hopeless")}
    assert decodings["fixed"][1].max_tokens == 20  # a truncated answer is asked again with more room
    assert decodings["hopeless"][1].temperature >= 0.7  # greedy decoding would only repeat itself
    assert captioner.usage()["requests"] == 6 and captioner.usage()["retries"] == 3


def test_signature_tracks_model_prompt_and_decoding_but_not_retries():
    base = ScriptedAnswers(CaptionParams(backend="vllm"), {}).signature
    assert ScriptedAnswers(CaptionParams(backend="vllm", retries=5), {}).signature == base
    for change in ({"model": "other"}, {"temperature": 0.5}, {"free_text": True}, {"image_size": 224}):
        assert ScriptedAnswers(CaptionParams(backend="vllm", **change), {}).signature != base, change
