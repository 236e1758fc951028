"""A small, real search setup without DVC: what `fashion-cir search` and `serve` read, built in seconds.

The tiny demo catalogue goes through the real stage functions (caption, triplets, decode, embed, index, evaluate)
under a temporary `Paths` root; the stage-1 and stage-2 checkpoints are one UNTRAINED model (the server's
behaviour does not depend on the weights, and training would take minutes). The val rankings
(`Paths.val_rankings`, the schema of pipeline/evaluation/protocols.py's `top_results`) are computed with the
search engine itself: each val triplet's reference and relative text, searched over the whole gallery, gives its
top 10 and its target's rank.

tests/conftest.py registers it as a plugin; the fixture `search_root` is
built once per session and shared by every module that asks for it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.captioning.vllm_server import free_port
from pipeline.config import DataParams, GalleryParams, IndexParams, ModelParams, Params
from pipeline.io import write_parquet
from pipeline.paths import Paths
from pipeline.triplets.query_text import relative_text

TOP = 10


def build_search_root(root: Path, data: DataParams) -> Paths:
    """Caption, triplets, decode, one untrained checkpoint as stage 1 and stage 2, its static features, the index,
    the metrics and their context (as `evaluate` writes them) and the engine's val rankings under `root`."""
    # torch and open_clip load here, when a test first needs the setup, not while pytest collects
    from pipeline.captioning import caption
    from pipeline.data import decode
    from pipeline.evaluation import evaluate
    from pipeline.features import embed
    from pipeline.models.clip import create_model, save_checkpoint
    from pipeline.search import index
    from pipeline.triplets import triplets

    params, paths = Params(data=data, gallery=GalleryParams(root=data.root)), Paths(root)
    for stage in (caption, triplets, decode):
        stage.run(params, paths)
    model = create_model(ModelParams(), seed=0)
    save_checkpoint(paths.stage1_dir, model)
    save_checkpoint(paths.stage2_dir, model)
    for stage in (embed, index, evaluate):
        stage.run(params, paths)
    write_val_rankings(paths)
    return paths


def write_val_rankings(paths: Paths) -> pd.DataFrame:
    """Every val triplet ranked by the engine over the whole gallery, in the columns `evaluate` writes."""
    from pipeline.search.engine import SearchEngine

    engine = SearchEngine.open(paths)
    rows = []
    for triplet in pd.read_parquet(paths.triplets("val")).itertuples():
        text = relative_text(triplet.caption1, triplet.caption2)
        answer = engine.search(triplet.reference, text, len(engine.gallery))
        names = [hit.name for hit in answer.hits]
        rows.append({"triplet_id": triplet.triplet_id, "category": triplet.category, "source": triplet.source,
                     "reference": triplet.reference, "target": triplet.target, "caption1": triplet.caption1,
                     "caption2": triplet.caption2, "query_text": answer.query_text,
                     "target_rank": names.index(triplet.target) + 1 if triplet.target in names else 0,
                     "top": names[:TOP], "scores": [round(hit.score, 5) for hit in answer.hits[:TOP]]})
    table = pd.DataFrame(rows)
    write_parquet(paths.val_rankings, pa.Table.from_pandas(table, preserve_index=False))
    return table


@pytest.fixture(scope="session")
def search_root(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root of a built search setup (index, untrained stage-2 model, val rankings), once per session."""
    return build_search_root(tmp_path_factory.mktemp("search"), DataParams(root=str(tiny_catalogue))).root


def write_shop(catalogue: Path, root: Path) -> Path:
    """The demo's images as a shop's catalogue: free category names, colour and pattern columns from the demo's
    tags, and a numeric price column, as a catalogue's products table has them."""
    (root / "images").mkdir(parents=True)
    rows = []
    for category, shown in (("dress", "Dresses"), ("shirt", "Shirts"), ("toptee", "Tops")):
        for split in ("train", "val"):
            tags = json.loads((catalogue / "tags" / f"asin2attr.{category}.{split}.json").read_text())
            for name, groups in tags.items():
                (root / "images" / f"{name}.png").write_bytes((catalogue / "images" / f"{name}.png").read_bytes())
                rows.append({"image": f"{name}.png", "category": shown, "split": split, "colour": groups[0][0],
                             "pattern": groups[0][1], "price": 10 + (7 * len(rows)) % 90})
    pd.DataFrame(rows).to_csv(root / "products.csv", index=False)
    return root


@pytest.fixture(scope="session")
def shop_catalogue(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo as a shop's catalogue folder (write_shop)."""
    return write_shop(tiny_catalogue, tmp_path_factory.mktemp("shop") / "catalog")


def shop_data(shop: Path) -> DataParams:
    return DataParams(source="catalog", root=str(shop), categories=[])


@pytest.fixture(scope="session")
def shop_search_root(shop_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A built search setup over a shop's catalogue (write_shop): the gallery has columns to filter on."""
    return build_search_root(tmp_path_factory.mktemp("shop-search"), shop_data(shop_catalogue)).root


def rebuilt_with(built: Path, root: Path, data: DataParams, settings: IndexParams) -> Path:
    """A copy of a built search setup whose index is built again with `settings` (another backend or kind); the
    gallery's features come from the copied feature cache, so nothing is encoded again."""
    from pipeline.search import index

    shutil.copytree(built, root, symlinks=True)
    index.run(Params(data=data, gallery=GalleryParams(root=data.root), index=settings), Paths(root))
    return root


@pytest.fixture(scope="session")
def milvus_search_root(search_root: Path, tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`search_root` with its gallery in a Milvus Lite collection (index.backend milvus, an exact FLAT index)."""
    return rebuilt_with(search_root, tmp_path_factory.mktemp("milvus-search") / "root",
                        DataParams(root=str(tiny_catalogue)), IndexParams(backend="milvus"))


@pytest.fixture(scope="session")
def milvus_shop_root(shop_search_root: Path, shop_catalogue: Path, tmp_path_factory: pytest.TempPathFactory
                     ) -> Path:
    """`shop_search_root` with its gallery in a Milvus Lite collection: filters on text and numeric columns."""
    return rebuilt_with(shop_search_root, tmp_path_factory.mktemp("milvus-shop") / "root", shop_data(shop_catalogue),
                        IndexParams(backend="milvus"))


@pytest.fixture
def milvus_server(tmp_path: Path) -> Iterator[str]:
    """`milvus-lite server` on a loopback port: the same client path a Milvus cluster's URL takes."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "milvus-lite"), "server", "--data-dir",
                               str(tmp_path / "milvus-data"), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        else:
            raise AssertionError("milvus-lite server did not start within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)
