"""A gallery that lives beside a trained model: a shop's catalogue folder (gallery.root) changes, `dvc repro` runs
the `index` stage alone, encodes only the images it has not seen, and search follows the change; the metrics do
not move. Then the same gallery in a Milvus Lite collection (index.backend: milvus) answers as the FAISS file does."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline.paths import Paths
from pipeline.search.engine import Query, SearchEngine
from tests.support.dag import ran, restore_reference_run, run, set_params
from tests.support.search_fixture import write_shop
from tests.support.shop_changes import change_shop

pytestmark = pytest.mark.e2e
ADDED, REMOVED = 50, 20


def index_line(output: str) -> dict[str, int]:
    """The counts the `index` stage printed (encoded, from the cache, captioned, ...)."""
    line = next(text for text in output.splitlines() if text.startswith("index: "))
    return {what: int(n) for n, what in re.findall(r"(\d+) (encoded|from the cache|captioned|captions from the "
                                                   r"cache|upserted|deleted)", line)}


def test_products_added_and_removed_reindex_only_the_gallery(tiny_repo: Path, tmp_path: Path):
    root, shop = tiny_repo, tiny_repo / "shop"
    metrics = (root / "metrics" / "eval.json").read_bytes()
    try:
        write_shop(root / "data" / "synthetic", shop)
        set_params(root, {"gallery": {"root": "shop"}})
        first = run(["dvc", "repro"], root)
        assert ran(first.stdout) == {"index"}
        counts = index_line(first.stdout)
        size = len(pd.read_csv(shop / "products.csv"))
        assert counts["encoded"] == 0 and counts["from the cache"] == size  # the same files: features by content

        added, removed = change_shop(shop, tmp_path, ADDED, REMOVED)

        second = run(["dvc", "repro"], root)
        assert ran(second.stdout) == {"index"}  # no training stage, no evaluation
        counts = index_line(second.stdout)
        assert counts["encoded"] == ADDED and counts["from the cache"] == size - REMOVED
        assert counts["captioned"] == ADDED and counts["captions from the cache"] == size - REMOVED
        assert (root / "metrics" / "eval.json").read_bytes() == metrics

        engine = SearchEngine.open(Paths(root))
        names = set(engine.gallery["name"])
        gone = {Path(image).stem for image in removed["image"]}
        assert len(names) == size - REMOVED + ADDED and not names & gone
        each = [Query(Path(shop / "images" / image).read_bytes(), "", 1, (), True) for image in added["image"]]
        assert [answer.hits[0].name for answer in engine.search_many(each)] == \
            [Path(image).stem for image in added["image"]]  # each new product is found by its own photo
        everything = engine.search_many([Query(None, text, len(names)) for text in ("a red dress", "striped")])
        assert all(len(a.hits) == len(names) and not {h.name for h in a.hits} & gone for a in everything)

        set_params(root, {"index": {"backend": "milvus"}})
        third = run(["dvc", "repro"], root)
        assert ran(third.stdout) == {"index"} and index_line(third.stdout)["encoded"] == 0
        in_milvus = SearchEngine.open(Paths(root))
        assert in_milvus.description["backend"] == "milvus"
        queries = [Query(None, "a red dress", 10), Query(str(added["image"].iat[0]).rsplit(".", 1)[0], "is blue", 10),
                   Query(None, "striped", 10, ("price <= 40",))]
        for faiss_answer, milvus_answer in zip(engine.search_many(queries), in_milvus.search_many(queries),
                                               strict=True):
            assert [h.name for h in milvus_answer.hits] == [h.name for h in faiss_answer.hits]
        assert (root / "metrics" / "eval.json").read_bytes() == metrics
    finally:
        shutil.rmtree(shop, ignore_errors=True)
        restore_reference_run(root)
