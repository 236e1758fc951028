"""Generated training triplets: pairs of training images whose captioned attributes differ in a few fields, with
modification texts from templates ("{new} instead of {old}", "unlike {old}, I want {new}", ...) as SPN4CIR writes
them, so a catalogue with no annotated pairs still trains (`triplets.generated_per_category`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from tqdm import tqdm

from pipeline.captioning.attributes import PATTERN_NOUNS, Attributes
from pipeline.triplets.query_text import triplet_query_text
from pipeline.triplets.schema import TRIPLET_COLUMNS


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
    """[N, fields] integer codes of each field's value (the schema's fields, then any named extra attribute);
    0 where the captioner gave none."""
    fields = list(dict.fromkeys(name for a in attributes for name in a.field_names()))
    values = [[a.value(f) for f in fields] for a in attributes]
    vocabulary = {v: i + 1 for i, v in enumerate(sorted({v for row in values for v in row if v is not None}))}
    return np.array([[vocabulary[v] if v is not None else 0 for v in row] for row in values]).reshape(
        len(attributes), len(fields))


def _generated_row(category: str, split: str, index: int, reference: tuple[str, Attributes, str],
                   target: tuple[str, Attributes, str], fields: list[str], use_reference_prompt: bool,
                   rng: np.random.Generator) -> dict[str, str]:
    (ref_name, ref, ref_caption), (tgt_name, tgt, tgt_caption) = reference, target
    first, second = rng.choice(len(_TEMPLATES), size=2, replace=False)
    caption1 = modification_text(ref, tgt, fields, int(first))
    caption2 = modification_text(ref, tgt, fields, int(second))
    prompt = ref_caption if use_reference_prompt else ""
    prefix = "generated" if split == "train" else f"generated-{split}"
    triplet_id = f"{prefix}-{category}-{index:06d}"
    return {"triplet_id": triplet_id, "category": category, "split": split,
            "source": "generated", "pair_id": "", "subset": [], "reference": ref_name, "target": tgt_name,
            "caption1": caption1, "caption2": caption2, "reference_caption": ref_caption,
            "target_caption": tgt_caption, "prompt": prompt,
            "query_text": triplet_query_text(caption1, caption2, prompt)}


def _excluded_partners(names: list[str], exclude: set[tuple[str, str]]) -> dict[int, set[int]]:
    """`exclude`'s (reference, target) pairs among `names`, as partner rows per anchor row: a set lookup per pair
    once, instead of one per candidate partner for every triplet made."""
    row: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        row.setdefault(name, []).append(i)
    taken: dict[int, set[int]] = {}
    for reference, target in exclude:
        for r in row.get(reference, ()):
            taken.setdefault(r, set()).update(row.get(target, ()))
    return taken


def generated_triplets(
    captions: pd.DataFrame, count_per_category: int, max_changed_fields: int, exclude: set[tuple[str, str]],
    use_reference_prompt: bool, rng: np.random.Generator, split: str = "train",
) -> pd.DataFrame:
    """Triplets of `split` from pairs of its images whose captioned attributes differ in 1..max_changed_fields
    fields.

    Only fields both images have a value for are compared, so a captioner that leaves a field empty never
    produces a pair that claims a change it did not see. Annotated pairs (`exclude`) are not generated again.
    Anchors are visited in random order, in as many passes as it takes to make the count or run out of pairs.
    The reference prompt is the reference's caption, as for annotated triplets.
    """
    rows = []
    groups = captions.groupby("category", sort=True)
    progress = tqdm(total=count_per_category * groups.ngroups, desc=f"generate {split} triplets", unit="triplet",
                    mininterval=2)
    for category, group in groups:
        attributes = [Attributes.from_dict(json.loads(a)) for a in group["attributes"]]
        names, texts = group["name"].tolist(), group["caption"].tolist()
        codes = _attribute_codes(attributes)
        known = codes > 0
        taken = _excluded_partners(names, exclude)
        made, progressed = 0, True
        while made < count_per_category and progressed:
            progressed = False
            for anchor in rng.permutation(len(names)):
                if made >= count_per_category:
                    break
                changed = (codes != codes[anchor]) & known[anchor] & known
                counts = changed.sum(axis=1)
                partners = np.flatnonzero((counts >= 1) & (counts <= max_changed_fields))
                if anchor in taken:
                    partners = partners[~np.isin(partners, list(taken[anchor]))]
                if not len(partners):
                    continue
                partner = int(partners[int(rng.integers(len(partners)))])
                taken.setdefault(int(anchor), set()).add(partner)
                fields = attributes[anchor].changed_fields(attributes[partner])
                rows.append(_generated_row(category, split, made, (names[anchor], attributes[anchor], texts[anchor]),
                                           (names[partner], attributes[partner], texts[partner]), fields,
                                           use_reference_prompt, rng))
                exclude.add((names[anchor], names[partner]))
                made, progressed = made + 1, True
                progress.update()
    progress.close()
    return pd.DataFrame(rows, columns=TRIPLET_COLUMNS)
