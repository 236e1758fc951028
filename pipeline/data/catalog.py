"""Your own catalogue (`data.source: catalog`): a folder of images and a products table, no annotations needed.

    <root>/products.csv (or .parquet)  one row per image: the image file, its category (any name), optional title,
                                       optional split, and any attribute columns with free names (colour, type, ...)
    <root>/images/<file>               the files the image column names (with or without their extension)
    <root>/triplets.csv (or .parquet)  optional annotated pairs: reference, target, text1, optional text2 and split

Which column is which is `data.catalog.*` (the defaults are the names above). Splits come from the split column
when there is one, otherwise from `seed`: each image goes to val with probability `data.catalog.val_fraction`, so no
image is in two splits. With no triplets table, training triplets are generated from the captions (the `triplets`
stage) and so are the held-out val queries; `metrics/eval.json` then says its queries were generated.

Each image's attribute columns reach the `catalog` captioner as named tags ("colour: black"); the title, when there
is one, as "title: ..." (pipeline/captioning/attributes.py turns them into the attribute schema).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from pipeline.config import CatalogParams
from pipeline.data import IMAGE_COLUMNS, PAIR_COLUMNS, TITLE_TAG
from pipeline.data.annotations import CATALOG_TRIPLETS, parse_annotation
from pipeline.data.fashioniq import IMAGE_EXTENSIONS
from pipeline.errors import PipelineError

LAYOUT = "images/ and products.csv (or products.parquet), optionally triplets.csv; see the README"
SPLITS = ("train", "val")


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet table as strings (missing cells as ""); one sentence if it cannot be read."""
    try:
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(
            path, dtype=str, keep_default_na=False)
    except Exception as error:  # pandas and pyarrow raise many types for a malformed file
        raise PipelineError(f"{path} could not be read as a table: {str(error).splitlines()[0]}.") from None
    return table.astype(str).replace({"nan": "", "None": ""}) if len(table.columns) else table


def find_table(root: Path, stem: str) -> Path | None:
    for suffix in (".csv", ".parquet"):
        if (root / f"{stem}{suffix}").is_file():
            return root / f"{stem}{suffix}"
    return None


def split_by_seed(names: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """train or val for every image name, deterministic for `seed` and independent of the table's row order."""
    ordered = sorted(set(names))
    draws = np.random.default_rng([seed, 17]).random(len(ordered))
    return {name: "val" if draw < val_fraction else "train" for name, draw in zip(ordered, draws, strict=True)}


def _named(column: str) -> str:
    """'baseColour' -> 'base colour', 'article_type' -> 'article type': a column name as words."""
    spaced = "".join(f" {c.lower()}" if c.isupper() else c for c in column).replace("_", " ").replace("-", " ")
    return " ".join(spaced.split())


@dataclass
class Catalog:
    """A shop's catalogue: free category names, attributes from the table's columns, optional annotated pairs."""

    splits: ClassVar[tuple[str, ...]] = SPLITS
    root: Path
    params: CatalogParams
    categories: list[str]
    seed: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    key: str = "data.root"  # the param that named the folder, for the error sentences

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if not self.root.is_dir():
            raise PipelineError(f"{self.key} = '{self.root}' does not exist; expected your catalogue ({LAYOUT}).")
        if not (self.root / "images").is_dir():
            raise PipelineError(f"{self.key} = '{self.root}' has no 'images/' folder; expected your catalogue "
                                f"({LAYOUT}).")
        if find_table(self.root, "products") is None:
            raise PipelineError(f"{self.key} = '{self.root}' has no products.csv or products.parquet; expected your "
                                f"catalogue ({LAYOUT}).")

    @cached_property
    def products(self) -> pd.DataFrame:
        """The products table with columns name, category, split, path, title plus the attribute columns. Rows left
        out are counted by reason in `missing`: an empty category, a category data.categories does not name, an
        image file that is missing."""
        path = find_table(self.root, "products")
        assert path is not None
        table = read_table(path)
        p = self.params
        for key, column in (("image_column", p.image_column), ("category_column", p.category_column)):
            if column not in table.columns:
                raise PipelineError(f"{path} has no column '{column}' (data.catalog.{key}); its columns are: "
                                    f"{', '.join(table.columns)}.")
        absent = [c for c in p.attribute_columns if c not in table.columns]
        if absent:
            raise PipelineError(f"{path} has no column '{absent[0]}' (data.catalog.attribute_columns); its columns "
                                f"are: {', '.join(table.columns)}.")
        files: dict[str, str] = {}  # file name and file name without its extension -> path
        with os.scandir(self.root / "images") as entries:
            for entry in entries:
                stem, extension = os.path.splitext(entry.name)
                if extension.lower() in IMAGE_EXTENSIONS:
                    files[stem] = files[entry.name] = entry.path
        frame = pd.DataFrame({"name": [os.path.splitext(os.path.basename(v))[0] for v in table[p.image_column]],
                              "category": table[p.category_column].str.strip(),
                              "path": [files.get(v, "") for v in table[p.image_column]]})
        if frame["name"].duplicated().any():
            duplicate = frame["name"][frame["name"].duplicated()].iloc[0]
            raise PipelineError(f"{path} lists image '{duplicate}' twice (data.catalog.image_column = "
                                f"'{p.image_column}'); each image is one product row.")
        frame["title"] = table[p.title_column].str.strip() if p.title_column in table.columns else ""
        if p.split_column in table.columns:
            frame["split"] = table[p.split_column].str.strip().str.lower()
            wrong = sorted(set(frame["split"]) - set(SPLITS))
            if wrong:
                raise PipelineError(f"{path} column '{p.split_column}' (data.catalog.split_column) holds '{wrong[0]}';"
                                    f" allowed: train, val.")
        else:
            frame["split"] = frame["name"].map(split_by_seed(frame["name"].tolist(), p.val_fraction, self.seed))
        used = {p.image_column, p.category_column, p.title_column, p.split_column}
        self.attribute_columns = list(p.attribute_columns) or [c for c in table.columns if c not in used]
        for column in self.attribute_columns:
            frame[f"attribute:{column}"] = table[column].str.strip()
        self.missing["category_empty"] = int((frame["category"] == "").sum())
        frame = frame[frame["category"] != ""]
        if self.categories:
            self.missing["category_not_in_data_categories"] = int((~frame["category"].isin(self.categories)).sum())
            frame = frame[frame["category"].isin(self.categories)]
        self.missing["images_missing"] = int((frame["path"] == "").sum())
        return frame[frame["path"] != ""].reset_index(drop=True)

    def images(self, split: str) -> pd.DataFrame:
        return self.products[self.products["split"] == split][IMAGE_COLUMNS].reset_index(drop=True)

    def attributes(self) -> pd.DataFrame:
        """name plus one column per attribute column of the table, under the table's own names (for search
        filters: `colour = red`)."""
        products = self.products  # reading the table decides the attribute columns
        columns = {f"attribute:{c}": c for c in self.attribute_columns}
        return products[["name", *columns]].rename(columns=columns).reset_index(drop=True)

    def tags(self, split: str) -> dict[str, list[str]]:
        """Named tags ("<attribute>: <value>", "title: <title>") of every image of `split`; empty cells left out."""
        rows = self.products[self.products["split"] == split]
        prefixes = [f"{_named(c)}: " for c in self.attribute_columns]
        columns = [rows[f"attribute:{c}"].tolist() for c in self.attribute_columns]  # column lists: fast at 400k rows
        titles = rows["title"].tolist()
        tags: dict[str, list[str]] = {}
        for i, name in enumerate(rows["name"].tolist()):
            named = [prefix + values[i] for prefix, values in zip(prefixes, columns, strict=True) if values[i]]
            tags[name] = named + ([f"{TITLE_TAG}{titles[i]}"] if titles[i] else [])
        return tags

    def pairs(self, split: str) -> pd.DataFrame:
        """Annotated pairs of `split` from the optional triplets table (none without one): a pair belongs to its
        reference's split and is dropped (and counted) where its target is in the other split or missing."""
        path = find_table(self.root, "triplets")
        if path is None:
            return pd.DataFrame(columns=PAIR_COLUMNS)
        table = read_table(path)
        for column in ("reference", "target", "text1"):
            if column not in table.columns:
                raise PipelineError(f"{path} has no column '{column}'; an annotated triplets table has reference, "
                                    f"target, text1 and optionally text2 and split.")
        entries = parse_annotation(table.to_dict("records"), CATALOG_TRIPLETS, path)
        where = self.products.set_index("name")
        rows, dropped = [], 0
        for i, entry in enumerate(entries):
            reference, target = Path(entry.reference).stem, Path(entry.target).stem
            if reference not in where.index or target not in where.index:
                dropped += split == "train"  # counted once, under train
                continue
            if (entry.split or where.at[reference, "split"]) != split:
                continue
            if where.at[target, "split"] != split or where.at[target, "category"] != where.at[reference, "category"]:
                dropped += 1
                continue
            rows.append((where.at[reference, "category"], split, f"catalog.{i}", reference, target, entry.text1,
                         entry.text2.strip(), []))
        self.missing[f"{split}.pairs_dropped"] = dropped
        return pd.DataFrame(rows, columns=PAIR_COLUMNS)

    def image_files(self) -> list[str]:
        return self.products["path"].tolist()
