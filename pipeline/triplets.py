"""Training and validation triplets: annotated pairs joined with captions, plus generated attribute-aware triplets.

A triplet's composed query text is its relative captions followed by the reference image's sentence-level prompt
(pipeline/query_text.py). Generated triplets pair gallery images whose captioned attributes differ in a few fields
and phrase the modification from templates, as SPN4CIR does, or (`triplets.phrasing: mllm`) ask an LLM on a vLLM
server to word it, to add training signal where annotations are scarce.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.attributes import COMPARABLE_FIELDS, PATTERN_NOUNS, Attributes
from pipeline.config import CaptionParams, DataParams, TripletsParams
from pipeline.data import open_dataset
from pipeline.io import write_json, write_parquet
from pipeline.query_text import query_text, relative_text

# pair_id and subset are the benchmark's own (CIRR's pairid and img_set members, used by its protocol and test
# server); generated triplets have neither. Test-split triplets (CIRR test1) have target "".
TRIPLET_SCHEMA = pa.schema([(name, pa.string()) for name in (
    "triplet_id", "category", "split", "source", "pair_id", "candidate", "target", "caption1", "caption2",
    "reference_caption", "target_caption", "prompt", "query_text")] + [("subset", pa.list_(pa.string()))])
TRIPLET_COLUMNS = TRIPLET_SCHEMA.names


def annotated_triplets(pairs: pd.DataFrame, captions: pd.DataFrame, use_reference_prompt: bool) -> pd.DataFrame:
    """Join annotated pairs with image captions; pairs whose images have no caption (corrupt) are dropped.

    Captions are looked up by (category, name): a FashionIQ image can belong to two categories. A hidden target
    (test split, target "") needs no caption."""
    caption_of = dict(zip(zip(captions["category"], captions["name"]), captions["caption"], strict=True))
    candidate = list(zip(pairs["category"], pairs["candidate"]))
    target = list(zip(pairs["category"], pairs["target"]))
    keep = [c in caption_of and (t in caption_of or not t[1]) for c, t in zip(candidate, target, strict=True)]
    table = pairs[keep].reset_index(drop=True).copy()
    table["source"] = "annotated"
    table["reference_caption"] = [caption_of[key] for key in zip(table["category"], table["candidate"])]
    table["target_caption"] = [caption_of.get(key, "") for key in zip(table["category"], table["target"])]
    table["triplet_id"] = [f"{s}-{c}-{i:06d}" for i, (s, c) in enumerate(zip(table["split"], table["category"]))]
    table["prompt"] = table["reference_caption"] if use_reference_prompt else ""
    table["query_text"] = [query_text(relative_text(a, b), prompt) for a, b, prompt
                           in zip(table["caption1"], table["caption2"], table["prompt"], strict=True)]
    return table[TRIPLET_COLUMNS]


def _value_phrase(name: str, attributes: Attributes) -> str:
    value = attributes.value(name)
    if name == "accent":
        return f"{value} {PATTERN_NOUNS.get(attributes.pattern or '', 'details')}"
    if name == "pattern":
        return "a solid color" if value == "solid" else " ".join(filter(None, (attributes.accent, value)))
    if name == "length":
        return f"{value} length"
    return str(value)


_TEMPLATES = ("{new} instead of {old}", "unlike {old}, I want {new}", "change {old} to {new}", "is {new}, not {old}")


def modification_text(reference: Attributes, target: Attributes, fields: list[str], template: int) -> str:
    return " and ".join(
        _TEMPLATES[template].format(new=_value_phrase(f, target), old=_value_phrase(f, reference)) for f in fields)


def _attribute_codes(attributes: list[Attributes]) -> np.ndarray:
    """[N, len(COMPARABLE_FIELDS)] integer codes of each field's value; 0 where the captioner gave none."""
    values = [[a.value(f) for f in COMPARABLE_FIELDS] for a in attributes]
    vocabulary = {v: i + 1 for i, v in enumerate(sorted({v for row in values for v in row if v is not None}))}
    return np.array([[vocabulary[v] if v is not None else 0 for v in row] for row in values]).reshape(
        len(attributes), len(COMPARABLE_FIELDS))


def _generated_row(category: str, index: int, reference: tuple[str, Attributes], target: tuple[str, Attributes],
                   fields: list[str], use_reference_prompt: bool, rng: np.random.Generator) -> dict[str, str]:
    (ref_name, ref), (tgt_name, tgt) = reference, target
    first, second = rng.choice(len(_TEMPLATES), size=2, replace=False)
    caption1 = modification_text(ref, tgt, fields, int(first))
    caption2 = modification_text(ref, tgt, fields, int(second))
    prompt = ref.sentence() if use_reference_prompt else ""
    return {"triplet_id": f"generated-{category}-{index:06d}", "category": category, "split": "train",
            "source": "generated", "pair_id": "", "subset": [], "candidate": ref_name, "target": tgt_name, "caption1": caption1,
            "caption2": caption2, "reference_caption": ref.sentence(), "target_caption": tgt.sentence(),
            "prompt": prompt, "query_text": query_text(relative_text(caption1, caption2), prompt)}


def changed_fields(reference: Attributes, target: Attributes) -> list[str]:
    """The fields both garments have a value for and that differ (what a generated triplet asks to change)."""
    return [f for f in COMPARABLE_FIELDS
            if reference.value(f) is not None and target.value(f) is not None and reference.value(f) != target.value(f)]


def generated_triplets(
    captions: pd.DataFrame, count_per_category: int, max_changed_fields: int, exclude: set[tuple[str, str]],
    use_reference_prompt: bool, rng: np.random.Generator,
) -> pd.DataFrame:
    """Triplets from pairs of training images whose captioned attributes differ in 1..max_changed_fields fields.

    Only fields both images have a value for are compared, so a captioner that leaves a field empty never
    produces a pair that claims a change it did not see. Annotated pairs (`exclude`) are not generated again.
    Anchors are visited in random order, in as many passes as it takes to make the count or run out of pairs.
    """
    rows = []
    for category, group in captions.groupby("category", sort=True):
        attributes = [Attributes.from_dict(json.loads(a)) for a in group["attributes"]]
        names = group["name"].tolist()
        codes = _attribute_codes(attributes)
        known = codes > 0
        made, progress = 0, True
        while made < count_per_category and progress:
            progress = False
            for anchor in rng.permutation(len(names)):
                if made >= count_per_category:
                    break
                changed = (codes != codes[anchor]) & known[anchor] & known
                counts = changed.sum(axis=1)
                partners = [p for p in np.flatnonzero((counts >= 1) & (counts <= max_changed_fields))
                            if (names[anchor], names[p]) not in exclude]
                if not partners:
                    continue
                partner = int(partners[int(rng.integers(len(partners)))])
                fields = changed_fields(attributes[anchor], attributes[partner])
                rows.append(_generated_row(category, made, (names[anchor], attributes[anchor]),
                                           (names[partner], attributes[partner]), fields, use_reference_prompt, rng))
                exclude.add((names[anchor], names[partner]))
                made, progress = made + 1, True
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS)


def rephrase_with_llm(generated: pd.DataFrame, captions: pd.DataFrame, caption: CaptionParams, model: str,
                      log_dir: Path | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Generated triplets with their two modification texts (and query text) written by `model` on a vLLM server;
    rows whose answer was unusable keep the template texts."""
    from pipeline.captioning.vllm_client import ChatClient
    from pipeline.phrasing import phrase

    attributes = {name: Attributes.from_dict(json.loads(a))
                  for name, a in zip(captions["name"], captions["attributes"], strict=True)}
    pairs = [(attributes[c], attributes[t], changed_fields(attributes[c], attributes[t]))
             for c, t in zip(generated["candidate"], generated["target"], strict=True)]
    client = ChatClient(caption, model, log_path=log_dir / "vllm-server.log" if log_dir else None)
    try:
        texts = phrase(client, pairs) if pairs else []
    finally:
        client.close()
    table = generated.copy()
    for i, worded in enumerate(texts):
        if worded is not None:
            table.loc[i, ["caption1", "caption2"]] = worded
    table["query_text"] = [query_text(relative_text(c1, c2), prompt) for c1, c2, prompt
                           in zip(table["caption1"], table["caption2"], table["prompt"], strict=True)]
    return table, {"phrased_by_llm": sum(t is not None for t in texts),
                   "phrasing_failed": sum(t is None for t in texts)}


def triplets_stage(data: DataParams, params: TripletsParams, seed: int, captions_path: Path, out_dir: Path,
                   caption: CaptionParams | None = None) -> dict[str, int]:
    """The `triplets` stage: annotated triplets of every split the dataset has (train, val and CIRR's test1) plus
    generated training triplets, as Parquet (`<split>.parquet`).

    `caption` (the server settings and the captioning model) is needed only for `phrasing: mllm`."""
    dataset = open_dataset(data)
    captions = pd.read_parquet(captions_path)
    tables = {split: annotated_triplets(dataset.pairs(split), captions, params.reference_prompt)
              for split in dataset.splits}
    train = tables["train"]
    generated = generated_triplets(
        captions[captions["split"] == "train"], params.generated_per_category, params.max_changed_fields,
        exclude=set(zip(train["candidate"], train["target"], strict=True)),
        use_reference_prompt=params.reference_prompt, rng=np.random.default_rng([seed, 3]))
    phrasing: dict[str, int] = {}
    if params.phrasing == "mllm" and len(generated):
        assert caption is not None, "phrasing: mllm needs the caption section's server settings"
        generated, phrasing = rephrase_with_llm(generated, captions, caption, params.phrasing_model or caption.model,
                                                log_dir=out_dir.parent / "captions")
    tables["train"] = pd.concat([train, generated], ignore_index=True)
    for split, table in tables.items():
        write_parquet(out_dir / f"{split}.parquet",
                      pa.Table.from_pandas(table[TRIPLET_COLUMNS], schema=TRIPLET_SCHEMA, preserve_index=False))
    report = {"train_annotated": len(train), "train_generated": len(generated),
              **{split: len(table) for split, table in tables.items() if split != "train"}, **phrasing,
              **{k: int(v) for k, v in dataset.missing.items()}}
    write_json(out_dir / "report.json", report)
    return report
