"""A shop's catalogue folder changing as a shop's does: new products rendered under new names, some removed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from pipeline.config import SyntheticParams
from pipeline.data.synthetic.synthesize import write_catalogue
from tests.support.search_fixture import write_shop


def new_products(folder: Path, count: int) -> pd.DataFrame:
    """`count` products the shop did not have: garments rendered from another seed, under new names (their files
    under `folder`, in the column `source`)."""
    rendered = SyntheticParams(families_train=6, families_val=1, family_size=3, distractors_val=0, image_size=64)
    write_catalogue(folder / "rendered", rendered, seed=7, workers=1)
    more = write_shop(folder / "rendered", folder / "shop")
    rows = pd.read_csv(more / "products.csv").head(count).copy()
    rows["image"] = "new-" + rows["image"]
    for row in rows.itertuples():
        source = more / "images" / row.image.removeprefix("new-")
        shutil.move(source, source.with_name(row.image))
    return rows.assign(source=[str(more / "images" / image) for image in rows["image"]])


def change_shop(shop: Path, work: Path, added: int, removed: int, keep: set[str] = frozenset()
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`removed` products taken out of the catalogue folder `shop` (never one named in `keep`) and `added` new ones
    put in, products.csv rewritten; the (added, removed) rows of products.csv."""
    products = pd.read_csv(shop / "products.csv")
    candidates = products[~products["image"].map(lambda image: Path(image).stem).isin(keep)]
    gone = candidates.sample(removed, random_state=0)
    for image in gone["image"]:
        (shop / "images" / image).unlink()
    fresh = new_products(work, added)
    for row in fresh.itertuples():
        shutil.copy(row.source, shop / "images" / row.image)
    products = pd.concat([products.drop(gone.index), fresh.drop(columns="source")], ignore_index=True)
    products.to_csv(shop / "products.csv", index=False)
    return fresh, gone
