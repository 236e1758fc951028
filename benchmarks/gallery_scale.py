"""The living gallery at scale: how long new products take to become searchable, how fast queries stay, and how
much memory it takes, at the demo's size, 10x and 100x, with the gallery in a FAISS file and in Milvus Lite.

    python benchmarks/gallery_scale.py                    # after `dvc repro`: the demo's trained model
    python benchmarks/gallery_scale.py --sizes 3900 39000 --backends faiss --new 1000
    python benchmarks/gallery_scale.py --dvc              # `dvc repro` after 1,000 new products, on the demo
    python benchmarks/gallery_scale.py --agreement 1000   # Milvus's top 10 against FAISS flat's, on the demo

For each size N and backend, in a fresh process: a catalogue folder of N products (distinct generated 16x16
images, their features already in the gallery's cache, as after earlier runs: synthetic unit vectors of low
intrinsic dimension, benchmarks/search.py's `embedding_like`) is indexed by the `index` stage's own function
(`pipeline.search.index.run`: captions, content keys, cached features, the index) in a process of its own, as
`dvc repro` runs it; then 1,000 new products (real rendered garments, captioned, decoded and encoded by the trained
model) are added and it runs again in another. Reported: the
first run (everything but the encoding), the run after the addition (what a shop waits for), query latency (text
only and composed with a gallery reference, one at a time, k 10, exact search), and the process's peak memory.

`--dvc` measures the same thing through DVC on the demo: a git worktree of this repository with the demo's outputs
checked out of its DVC cache, a catalogue copy of the demo as gallery.root, `dvc repro` once (only `index` runs),
then 1,000 products added and `dvc repro` timed again, to set beside a full `dvc repro`.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from common import append_result, describe, markdown_table
from search import embedding_like

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "blue", "black", "white", "green", "beige"]
CATEGORIES = ["dress", "shirt", "toptee"]
TEXTS = ["a red dress", "a striped shirt", "a black top with long sleeves", "is blue instead", "has no pattern"]


def generated_products(images: Path, n: int, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """n distinct small images written under `images`, their products table rows, and their content keys."""
    from pipeline.data.digests import content_digest

    rng = np.random.default_rng(seed)
    rows, keys = [], []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        data = buffer.getvalue()
        (images / f"g{seed}-{i:07d}.png").write_bytes(data)
        keys.append(content_digest(data))
        rows.append({"image": f"g{seed}-{i:07d}.png", "category": CATEGORIES[i % 3],
                     "colour": COLOURS[int(rng.integers(len(COLOURS)))], "price": int(rng.integers(5, 200))})
    return pd.DataFrame(rows), keys


def rendered_products(images: Path, n: int, work: Path) -> pd.DataFrame:
    """n real rendered garments (the demo's renderer, another seed) copied under `images` with new names."""
    from pipeline.config import SyntheticParams
    from pipeline.data.synthetic.synthesize import write_catalogue

    families = n // (3 * 4) + 1
    rendered = work / "rendered"
    if not rendered.exists():
        write_catalogue(rendered, SyntheticParams(families_train=families, families_val=1, family_size=4,
                                                  distractors_val=0, image_size=64), seed=99, workers=2)
    files = sorted((rendered / "images").glob("*.png"))[:n]
    rows = []
    for i, file in enumerate(files):
        shutil.copy(file, images / f"new-{file.name}")
        rows.append({"image": f"new-{file.name}", "category": CATEGORIES[i % 3], "colour": COLOURS[i % 6],
                     "price": 10 + i % 150})
    return pd.DataFrame(rows)


def in_a_process(target, *args):
    """`target(*args, results)` in a fresh process (its peak memory its own); what it put on `results`."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"{target.__name__}{args[:2]} failed (exit status {process.exitcode}); its traceback is above")
    return results.get(timeout=60)


def index_once(params, root: Path, results: multiprocessing.Queue) -> None:
    """The `index` stage's function once, in its own process as each `dvc repro` runs it: (seconds, its report,
    peak memory in MB). Milvus Lite's file is then released as it is between two runs of the stage."""
    import torch

    from pipeline.paths import Paths
    from pipeline.search import index

    torch.set_num_threads(2)
    started = time.perf_counter()
    report = index.run(params, Paths(root))
    results.put((time.perf_counter() - started, report, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(size: int, backend: str, new: int, work: Path, results: multiprocessing.Queue) -> None:
    """One size and backend: the index built, then built again after `new` products, each in a process of its own
    (index_once), then queries timed here."""
    import torch

    from pipeline.config import GalleryParams, IndexParams, Params
    from pipeline.models.clip import load_checkpoint
    from pipeline.paths import Paths
    from pipeline.search import index
    from pipeline.search.engine import SearchEngine
    from pipeline.search.feature_cache import FeatureCache
    from pipeline.search.gallery import feature_signature

    torch.set_num_threads(2)
    root, images = work / f"{backend}-{size}", work / f"images-{size}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "models").mkdir(parents=True)
    (root / "models" / "stage2").symlink_to(REPO / "models" / "stage2")
    paths = Paths(root)
    images.mkdir(exist_ok=True)
    stored = work / f"base-{size}.parquet"  # the generated images are kept for the other backend
    if stored.exists():
        base = pd.read_parquet(stored)
        keys = base.pop("key").tolist()
    else:
        base, keys = generated_products(images, size, seed=0)
        base.assign(key=keys).to_parquet(stored)
    added = rendered_products(images, new, work)
    model = load_checkpoint(paths.stage2_dir)
    cache = FeatureCache(paths.gallery_cache)
    cache.put_many(keys, embedding_like(size, model.embed_dim, seed=1), feature_signature(
        model, index.checkpoint_digest(paths.stage2_dir)))
    cache.close()
    catalogue = root / "catalogue"
    catalogue.mkdir()
    (catalogue / "images").symlink_to(images)
    settings = IndexParams(backend=backend, uri=str(root / "milvus.db") if backend == "milvus" else "")
    params = Params(gallery=GalleryParams(root=str(catalogue)), index=settings)

    base.to_csv(catalogue / "products.csv", index=False)
    first_seconds, first, first_rss = in_a_process(index_once, params, root)
    pd.concat([base, added], ignore_index=True).to_csv(catalogue / "products.csv", index=False)
    added_seconds, second, second_rss = in_a_process(index_once, params, root)
    assert second["encoded"] == new, second

    engine = SearchEngine.open(paths)
    names = engine.gallery["name"].sample(100, random_state=0).tolist()
    latencies: dict[str, list[float]] = {"text": [], "composed": []}
    engine.search(None, TEXTS[0], 10)
    for i, name in enumerate(names):
        for kind, reference in (("text", None), ("composed", name)):
            started = time.perf_counter()
            engine.search(reference, TEXTS[i % len(TEXTS)], 10)
            latencies[kind].append((time.perf_counter() - started) * 1000)
    results.put({"size": size + new, "backend": backend, "first_index_s": round(first_seconds, 1),
                 "index_after_new_s": round(added_seconds, 1), "new": new, "encoded": second["encoded"],
                 "text_p50_ms": round(statistics.median(latencies["text"]), 1),
                 "composed_p50_ms": round(statistics.median(latencies["composed"]), 1),
                 "peak_rss_mb": round(max(first_rss, second_rss,
                                          resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
                 "first_report": first, "second_report": second})


def run(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def through_dvc(new: int, work: Path) -> dict:
    """`dvc repro` on the demo after `new` products join a catalogue copy of it, in a worktree of this repository."""
    sys.path.insert(0, str(REPO))
    from tests.support.search_fixture import write_shop

    tree = work / "worktree"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)
    subprocess.run(["git", "worktree", "add", "--detach", str(tree)], cwd=REPO, check=True, capture_output=True)
    try:
        run(["dvc", "cache", "dir", "--local", str(REPO / ".dvc" / "cache")], tree)
        run(["dvc", "checkout"], tree)
        shop = write_shop(tree / "data" / "synthetic", tree / "shop")
        params = (tree / "params.yaml").read_text().replace("gallery:\n  root: data/synthetic",
                                                            "gallery:\n  root: shop")
        (tree / "params.yaml").write_text(params)
        first = run(["dvc", "repro"], tree)
        added = rendered_products(shop / "images", new, work).assign(split="train")  # the shop's table has splits
        products = pd.read_csv(shop / "products.csv")
        pd.concat([products, added], ignore_index=True).to_csv(shop / "products.csv", index=False)
        second = run(["dvc", "repro"], tree)
        return {"gallery": len(products), "new": new, "first_repro_s": round(first, 1),
                "repro_after_new_s": round(second, 1)}
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, check=False)


def agreement(queries: int, work: Path) -> list[dict]:
    """Milvus Lite against FAISS flat on the demo's index: composed queries (a gallery reference and a text) over the
    whole gallery and within the reference's category; for each Milvus index kind, the share of queries whose top
    10 is FAISS's, in order, and recall@10 against it."""
    import torch

    from pipeline.config import IndexParams
    from pipeline.paths import Paths
    from pipeline.search.engine import SearchEngine
    from pipeline.search.filters import Condition
    from pipeline.search.gallery import filterable_columns
    from pipeline.search.milvus_index import MilvusVectors, sync

    engine, paths = SearchEngine.open(Paths(REPO)), Paths(work / "agreement")
    gallery, rng = engine.gallery, np.random.default_rng(0)
    rows = rng.choice(len(gallery), queries, replace=False)
    features = engine.vectors.vectors(np.arange(len(gallery)))
    with torch.no_grad():
        texts = engine.model.encode_texts(engine.tokenizer([TEXTS[i % len(TEXTS)] for i in range(queries)]))
        composed = engine.model.compose(torch.from_numpy(features[rows]), texts).numpy().astype(np.float32)
    categories = [[Condition("category", "=", (str(gallery["category"].iat[row]),))] for row in rows]
    truth = {scope: [engine.vectors.search(composed[i:i + 1], 10, c)[1][0]
                     for i, c in enumerate(categories if scope == "category" else [[]] * queries)]
             for scope in ("gallery", "category")}
    records = []
    for kind in ("flat", "hnsw", "ivf"):
        settings = IndexParams(backend="milvus", kind=kind, uri=str(work / "agreement" / "milvus.db"))
        manifest, _ = sync(gallery, features, filterable_columns(gallery), settings, paths)
        milvus = MilvusVectors.open(manifest, paths, gallery["name"].tolist())
        for scope, expected in truth.items():
            found = [milvus.search(composed[i:i + 1], 10, c)[1][0]
                     for i, c in enumerate(categories if scope == "category" else [[]] * queries)]
            same = np.mean([list(f) == list(t) for f, t in zip(found, expected, strict=True)])
            recall = np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, expected, strict=True)])
            records.append({"kind": kind, "index": manifest["index_type"], "scope": scope, "queries": queries,
                            "same_top10": round(float(same), 4), "recall_at_10": round(float(recall), 4)})
            print(records[-1], flush=True)
        milvus.client.close()
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[3900, 39000, 390000])
    parser.add_argument("--backends", nargs="+", default=["faiss", "milvus"], choices=["faiss", "milvus"])
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gallery-scale"))
    parser.add_argument("--dvc", action="store_true", help="time `dvc repro` after new products, on the demo")
    parser.add_argument("--agreement", type=int, metavar="QUERIES", help="Milvus against FAISS flat on the demo")
    parser.add_argument("--out", default="benchmarks/gallery-scale.jsonl")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch

    machine = describe(torch.device("cpu"))
    print(machine)
    if args.agreement:
        for record in agreement(args.agreement, args.work):
            append_result(args.out, {"machine": machine, "mode": "agreement", **record})
        return
    if args.dvc:
        record = through_dvc(args.new, args.work)
        append_result(args.out, {"machine": machine, "mode": "dvc", **record})
        print(record)
        return
    rows = []
    for size in args.sizes:
        for backend in args.backends:
            record = in_a_process(measure, size, backend, args.new, args.work)
            append_result(args.out, {"machine": machine, "mode": "stage", **record})
            rows.append([record[k] for k in ("size", "backend", "first_index_s", "index_after_new_s",
                                             "text_p50_ms", "composed_p50_ms", "peak_rss_mb")])
            print(markdown_table(["gallery", "backend", "first index s", f"after {args.new} new s",
                                  "text query p50 ms", "composed p50 ms", "peak memory MB"], rows[-1:]), flush=True)
    print(markdown_table(["gallery", "backend", "first index s", f"after {args.new} new s", "text query p50 ms",
                          "composed p50 ms", "peak memory MB"], rows))


if __name__ == "__main__":
    main()
