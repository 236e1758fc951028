import json

import numpy as np
import pandas as pd

from pipeline.captioning.attributes import Attributes
from pipeline.triplets.generated import generated_triplets
from pipeline.triplets.query_text import relative_text, training_relative_texts
from pipeline.triplets.triplets import annotated_triplets


def test_validation_join_matches_clip4cir():
    assert relative_text("is red.", "has long sleeves") == "Is red and has long sleeves"
    assert relative_text(" is shiny?", "") == "Is shiny"


def test_training_join_uses_all_four_forms():
    assert training_relative_texts("is red", "has dots") == ("Is red and has dots", "Has dots and is red", "Is red",
                                                             "Has dots")
    assert set(training_relative_texts("is red.", "")) == {"Is red"}


def _captions(rows):
    return pd.DataFrame([{"name": n, "category": c, "split": "train", "caption": a.sentence(),
                          "attributes": json.dumps(a.to_dict())} for n, c, a in rows])


def test_annotated_triplets_append_the_reference_prompt_and_count_each_drop_with_its_reason():
    red = Attributes("dress", colors=("red",), pattern="solid", sleeves="short sleeves")
    blue = Attributes("dress", colors=("blue",), pattern="solid", sleeves="short sleeves")
    captions = _captions([("a", "dress", red), ("b", "dress", blue)])
    pairs = _pairs([("dress", "a", "b", "is blue", "is darker"), ("dress", "a", "corrupt", "x", "y"),
                    ("dress", "b", "a", " ", "")])
    table, dropped = annotated_triplets(pairs, captions, use_reference_prompt=True)
    assert len(table) == 1 and dropped == {"undecodable image": 1, "empty text": 1}
    assert table.loc[0, "query_text"] == "Is blue and is darker. a red dress with short sleeves"
    assert table.loc[0, "pair_id"] == "p0"
    assert annotated_triplets(pairs, captions, False)[0].loc[0, "query_text"] == "Is blue and is darker"


def _pairs(rows):
    return pd.DataFrame([{"category": c, "split": "train", "pair_id": f"p{i}", "reference": a, "target": b,
                          "caption1": c1, "caption2": c2, "subset": []} for i, (c, a, b, c1, c2) in enumerate(rows)])


def test_an_image_in_two_categories_gets_each_categorys_caption():
    # About 3% of FashionIQ's images are listed under two categories (e.g. shirt and toptee).
    as_shirt = Attributes("shirt", colors=("red",), sleeves="long sleeves")
    as_top = Attributes("toptee", colors=("red",), sleeves="long sleeves")
    blue = Attributes("toptee", colors=("blue",), sleeves="long sleeves")
    captions = _captions([("x", "shirt", as_shirt), ("x", "toptee", as_top), ("y", "toptee", blue),
                          ("y", "shirt", blue)])
    table, _ = annotated_triplets(_pairs([("shirt", "x", "y", "is blue", ""), ("toptee", "x", "y", "is blue", "")]),
                                  captions, use_reference_prompt=True)
    assert table["reference_caption"].tolist() == ["a red shirt with long sleeves", "a red top with long sleeves"]


def test_a_hidden_target_keeps_the_pair():
    red = Attributes("dress", colors=("red",))
    table, _ = annotated_triplets(_pairs([("dress", "a", "", "is blue", "")]), _captions([("a", "dress", red)]), True)
    assert len(table) == 1 and table.loc[0, "target_caption"] == ""


def test_generated_triplets_differ_in_few_fields_and_skip_annotated_pairs():
    rng = np.random.default_rng(0)
    base = dict(category="shirt", pattern="solid", sleeves="long sleeves", neckline="v-neck", length="cropped")
    rows = [(f"i{i}", "shirt", Attributes(colors=(c,), **{**base, "sleeves": s}))
            for i, (c, s) in enumerate([("red", "long sleeves"), ("blue", "long sleeves"),
                                        ("red", "short sleeves"), ("green", "sleeveless")])]
    captions = _captions(rows)
    attrs = {n: a for n, _, a in rows}
    exclude = {("i0", "i1")}
    table = generated_triplets(captions, 6, 1, set(exclude), True, rng)
    assert 0 < len(table) <= 6
    for row in table.itertuples():
        assert (row.reference, row.target) not in exclude
        assert len(attrs[row.reference].changed_fields(attrs[row.target])) == 1
        assert row.caption1 != row.caption2
        assert row.query_text.endswith(attrs[row.reference].sentence())
    assert len(set(zip(table.reference, table.target))) == len(table)


def test_llm_phrasing_request_names_both_garments_and_what_changes():
    from pipeline.triplets.phrasing import Phrasings, phrasing_messages

    reference = Attributes("dress", colors=("red",), pattern="solid", sleeves="long sleeves", length="mini")
    target = Attributes("dress", colors=("blue",), pattern="solid", sleeves="short sleeves", length=None)
    fields = reference.changed_fields(target)
    assert fields == ["color", "sleeves"]  # length is unknown on the target: never claimed as a change
    text = phrasing_messages(reference, target, fields)[0]["content"]
    assert '"red"' in text and '"blue"' in text and "They differ in: color, sleeves." in text
    assert set(Phrasings.model_json_schema()["required"]) == {"caption1", "caption2"}
