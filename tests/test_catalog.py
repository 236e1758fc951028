"""Your own catalogue as a data source: a products table with free category and attribute names."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.captioning.attributes import attributes_from_tags
from pipeline.config import CatalogParams, DataParams, Params
from pipeline.data import PAIR_COLUMNS, validate
from pipeline.data.catalog import Catalog, split_by_seed
from pipeline.errors import PipelineError
from pipeline.paths import Paths
from tests.conftest import REALDATA


@pytest.fixture
def shop(tiny_catalogue: Path, tmp_path: Path) -> Path:
    """A catalogue made from the demo's images: free categories, a colour and a pattern column, a title."""
    root = tmp_path / "shop"
    (root / "images").mkdir(parents=True)
    rows = []
    for category in ("dress", "shirt"):
        tags = json.loads((tiny_catalogue / "tags" / f"asin2attr.{category}.train.json").read_text())
        for name, groups in tags.items():
            (root / "images" / f"{name}.png").write_bytes((tiny_catalogue / "images" / f"{name}.png").read_bytes())
            rows.append({"image": f"{name}.png", "category": {"dress": "Dresses", "shirt": "Shirts"}[category],
                         "Base Colour": groups[0][0], "pattern": groups[0][1], "title": f"Nice {category} {name}"})
    pd.DataFrame(rows).to_csv(root / "products.csv", index=False)
    return root


def test_splits_come_from_the_seed_deterministically_and_never_overlap(shop: Path):
    catalog = Catalog(shop, CatalogParams(val_fraction=0.3), categories=[], seed=0)
    train, val = catalog.images("train"), catalog.images("val")
    assert set(train["name"]).isdisjoint(val["name"]) and len(train) + len(val) == len(catalog.products)
    assert 0 < len(val) < len(train)
    again = Catalog(shop, CatalogParams(val_fraction=0.3), categories=[], seed=0).images("val")
    assert again["name"].tolist() == val["name"].tolist()
    other = Catalog(shop, CatalogParams(val_fraction=0.3), categories=[], seed=1).images("val")
    assert set(other["name"]) != set(val["name"])
    assert set(train["category"]) == {"Dresses", "Shirts"}


def test_split_by_seed_ignores_row_order():
    names = [f"i{i}" for i in range(50)]
    assert split_by_seed(names, 0.2, 3) == split_by_seed(list(reversed(names)), 0.2, 3)


def test_attribute_columns_become_named_tags_and_the_title_a_description(shop: Path):
    catalog = Catalog(shop, CatalogParams(), categories=["Dresses"])
    name, tags = next(iter(catalog.tags("train").items()))
    assert any(t.startswith("base colour: ") for t in tags) and any(t.startswith("title: Nice dress") for t in tags)
    attributes = attributes_from_tags("Dresses", tags)
    assert attributes.color and attributes.value("pattern") is not None
    assert attributes.sentence().startswith(f"a {attributes.color}")


def test_no_triplets_table_means_no_annotated_pairs(shop: Path):
    pairs = Catalog(shop, CatalogParams(), categories=[]).pairs("train")
    assert list(pairs.columns) == PAIR_COLUMNS and pairs.empty


def test_annotated_triplets_belong_to_their_references_split(shop: Path):
    catalog = Catalog(shop, CatalogParams(split_column="split"), categories=[])
    table = pd.read_csv(shop / "products.csv")
    table["split"] = ["val" if i % 4 == 0 else "train" for i in range(len(table))]
    table.to_csv(shop / "products.csv", index=False)
    names = table["image"].str.removesuffix(".png").tolist()
    same_split = [n for n, s in zip(names, table["split"]) if s == "train"]
    pd.DataFrame({"reference": [same_split[0], names[0]], "target": [same_split[1], same_split[2]],
                  "text1": ["is red", "is blue"]}).to_csv(shop / "triplets.csv", index=False)
    pairs = catalog.pairs("train")
    assert pairs[["reference", "target", "caption1", "caption2"]].values.tolist() == [
        [same_split[0], same_split[1], "is red", ""]]
    catalog.pairs("val")  # names[0] is a val image whose target is in train: dropped and counted
    assert catalog.missing["val.pairs_dropped"] == 1


@pytest.mark.parametrize("change, message", [
    ({"image_column": "file"}, r"no column 'file' \(data.catalog.image_column\)"),
    ({"attribute_columns": ["colour"]}, r"no column 'colour' \(data.catalog.attribute_columns\)"),
])
def test_a_wrong_column_is_one_sentence(shop: Path, change: dict, message: str):
    with pytest.raises(PipelineError, match=message):
        Catalog(shop, CatalogParams(**change), categories=[]).images("train")


def test_a_repeated_image_or_a_wrong_split_is_one_sentence(shop: Path):
    table = pd.read_csv(shop / "products.csv")
    pd.concat([table, table.head(1)]).to_csv(shop / "products.csv", index=False)
    with pytest.raises(PipelineError, match="lists image .* twice"):
        Catalog(shop, CatalogParams(), categories=[]).images("train")
    table.assign(split="test").to_csv(shop / "products.csv", index=False)
    with pytest.raises(PipelineError, match="holds 'test'; allowed: train, val"):
        Catalog(shop, CatalogParams(), categories=[]).images("train")


def test_a_missing_products_table_names_the_layout(tmp_path: Path):
    (tmp_path / "images").mkdir()
    with pytest.raises(PipelineError, match="has no products.csv or products.parquet"):
        Catalog(tmp_path, CatalogParams(), categories=[])


def test_missing_image_files_are_counted_and_dropped(shop: Path):
    first = sorted((shop / "images").iterdir())[0]
    first.unlink()
    catalog = Catalog(shop, CatalogParams(), categories=[])
    assert first.stem not in set(catalog.products["name"])
    assert catalog.missing["images_missing"] == 1


def test_every_row_left_out_is_counted_with_its_reason_and_printed_by_validate(shop: Path, tmp_path: Path):
    table = pd.read_csv(shop / "products.csv", dtype=str, keep_default_na=False)
    table.loc[:2, "category"] = " "  # three rows with no category
    table.to_csv(shop / "products.csv", index=False)
    kept = ["Dresses"]
    (shop / "images" / table.loc[table["category"] == "Dresses", "image"].iloc[0]).unlink()
    catalog = Catalog(shop, CatalogParams(), categories=kept)
    other = int((~table["category"].isin([*kept, " "])).sum())
    assert len(catalog.products) == len(table) - 3 - other - 1
    assert catalog.missing == {"category_empty": 3, "category_not_in_data_categories": other, "images_missing": 1}

    params = Params(data=DataParams(source="catalog", root=str(shop), categories=kept))
    summary = validate.run(params, Paths(tmp_path))
    assert json.loads(Paths(tmp_path).dataset_summary.read_text())["dropped"] == catalog.missing
    assert validate.summary_line(summary).endswith(
        f"; left out: 3 (category_empty), {other} (category_not_in_data_categories), 1 (images_missing)")


@pytest.mark.skipif(not (REALDATA / "products").is_dir(), reason=f"no real product photos at {REALDATA}/products")
def test_reads_the_real_product_photos_with_their_own_column_names():
    params = CatalogParams(image_column="id", category_column="masterCategory", title_column="productDisplayName",
                           split_column="", attribute_columns=["gender", "baseColour", "usage"])
    catalog = Catalog(REALDATA / "products", params, categories=["Apparel", "Footwear", "Accessories"])
    images = pd.concat([catalog.images(split) for split in catalog.splits])
    assert len(images) > 1300 and set(images["category"]) == {"Apparel", "Footwear", "Accessories"}
    tags = catalog.tags("train")
    assert all(any(t.startswith("base colour: ") for t in words) for words in list(tags.values())[:50])
