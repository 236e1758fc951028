"""Search speed: one composed query against the demo's gallery, and FAISS indexes at a million vectors.

    python benchmarks/search.py demo [--queries 200]          # needs `dvc repro` (the index stage) first
    python benchmarks/search.py scale [--vectors 1000000]      # synthetic 512-d vectors, flat vs hnsw vs ivfpq

`demo` times `SearchEngine.search` end to end (reference image decoded and encoded, query text encoded, composed,
the index searched) with the model loaded, as `fashion-cir search` and the served page run it, and splits the time
into its parts. `scale` builds each index kind with the pipeline's own `build_index` over synthetic unit vectors of
low intrinsic dimension (as learned image features are; uniform noise has no meaningful neighbours), and reports
build time, index memory, recall@10 against exact search, and queries per second: batched (every core) and one at a
time (what one person's query waits for), over a sweep of each kind's search-time knob.
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np
import pandas as pd
import torch

from common import describe
from pipeline.config import IndexParams
from pipeline.paths import Paths
from pipeline.search.engine import SearchEngine
from pipeline.search.faiss_index import build_index

TEXTS = ("is red with long sleeves", "has a v-neck and is shorter", "is striped", "is darker and sleeveless",
         "has dots instead of stripes")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def demo(queries: int) -> None:
    engine = SearchEngine.open(Paths())
    names = engine.gallery["name"].sample(queries, replace=True, random_state=0).tolist()
    engine.search(names[0], TEXTS[0], 10)  # warm-up: first calls allocate
    total, parts = [], {"image": [], "text": [], "compose + search": []}
    for i, name in enumerate(names):
        text = TEXTS[i % len(TEXTS)]
        start = time.perf_counter()
        engine.search(name, text, 10)
        total.append((time.perf_counter() - start) * 1000)
        with torch.no_grad():
            t0 = time.perf_counter()
            pixels, _, caption = engine.reference_pixels(name)
            image = engine.model.encode_images(pixels)
            t1 = time.perf_counter()
            words = engine.model.encode_texts(engine.tokenizer([engine.query_text(text, caption)]))
            t2 = time.perf_counter()
            engine.vectors.search(engine.model.compose(image, words).numpy().astype(np.float32), 11, [])
            t3 = time.perf_counter()
        for key, seconds in zip(parts, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            parts[key].append(seconds * 1000)
    print(describe(torch.device("cpu")))
    kind = f"{engine.description['backend']} {engine.description['kind']}"
    print(f"demo gallery: {len(engine.gallery)} images, {kind} index, {engine.model.arch}, {queries} queries, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| what | p50 ms | p95 ms |\n|---|---|---|")
    print(f"| one query, end to end | {percentile(total, 50):.1f} | {percentile(total, 95):.1f} |")
    for key, values in parts.items():
        print(f"| {key} | {percentile(values, 50):.1f} | {percentile(values, 95):.1f} |")


def embedding_like(n: int, dim: int, seed: int, latent: int = 32) -> np.ndarray:
    """Unit vectors of low intrinsic dimension, as learned features are: a random linear map of `latent`-dimensional
    Gaussian codes plus a little isotropic noise, normalised. (Uniform noise in 512 dimensions has no near
    neighbours worth the name: no index, and no user, would search it.)"""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        codes = rng.standard_normal((stop - start, latent)).astype(np.float32)
        out[start:stop] = codes @ lift + 0.05 * rng.standard_normal((stop - start, dim)).astype(np.float32)
    faiss.normalize_L2(out)
    return out


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / 10 for f, t in zip(found, truth, strict=True)]))


def timed_search(index: faiss.Index, queries: np.ndarray, one_at_a_time: int) -> tuple[np.ndarray, float, float]:
    """Neighbours of every query, queries/s batched (every core), and queries/s one query at a time on one thread
    (a server answers each request on a thread of its own; OpenMP's start-up per call would dominate otherwise)."""
    start = time.perf_counter()
    _, found = index.search(queries, 10)
    batched = len(queries) / (time.perf_counter() - start)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    for row in queries[:one_at_a_time]:
        index.search(row[None], 10)
    single = one_at_a_time / (time.perf_counter() - start)
    faiss.omp_set_num_threads(threads)
    return found, batched, single


def scale(n: int, dim: int, n_queries: int) -> None:
    print(describe(torch.device("cpu")))
    print(f"{n:,} unit vectors of {dim} dimensions and intrinsic dimension 32, {n_queries} held-out queries, faiss "
          f"{faiss.__version__}, {faiss.omp_get_max_threads()} threads\n")
    data = embedding_like(n + n_queries, dim, seed=0)
    gallery, queries = data[:n], data[n:]
    rows = []

    def add(kind: str, knob: str, index: faiss.Index, build_s: float, memory: int, truth: np.ndarray) -> None:
        found, batched, single = timed_search(index, queries, one_at_a_time=200)
        rows.append({"index": kind, "search knob": knob, "build s": round(build_s, 1), "memory MB": memory // 2**20,
                     "recall@10": round(recall_at_10(found, truth), 3), "queries/s batched": round(batched),
                     "queries/s one at a time": round(single)})
        print(rows[-1], flush=True)

    start = time.perf_counter()
    flat = build_index(gallery, "flat")
    flat_build = time.perf_counter() - start
    _, truth = flat.search(queries, 10)
    add("flat", "-", flat, flat_build, flat.ntotal * dim * 4, truth)
    del flat

    settings = IndexParams(kind="hnsw")  # the index stage's defaults
    start = time.perf_counter()
    hnsw = build_index(gallery, "hnsw", 0, settings)
    build_s = time.perf_counter() - start
    memory = faiss.serialize_index(hnsw).nbytes
    for ef in (64, 96, 128, 160, 256):
        hnsw.hnsw.efSearch = ef
        add(f"hnsw (M {settings.hnsw_m}, ef_construction {settings.ef_construction})", f"ef_search {ef}", hnsw,
            build_s, memory, truth)
    del hnsw

    settings = IndexParams(kind="ivfpq", nlist=int(4 * np.sqrt(n)), pq_m=dim // 8, refine=8)
    start = time.perf_counter()
    refined = build_index(gallery, "ivfpq", 0, settings)
    build_s = time.perf_counter() - start
    ivf = faiss.downcast_index(refined.base_index)
    for nprobe in (16, 64, 256):
        ivf.nprobe = nprobe
        for k_factor in (0, 8):
            if k_factor:
                refined.k_factor = k_factor
                add(f"ivfpq (nlist {settings.nlist}, {settings.pq_m} B) + exact re-rank", f"nprobe {nprobe}, "
                    f"refine {k_factor}", refined, build_s, faiss.serialize_index(refined).nbytes, truth)
            else:
                add(f"ivfpq (nlist {settings.nlist}, {settings.pq_m} B)", f"nprobe {nprobe}", ivf, build_s,
                    faiss.serialize_index(ivf).nbytes, truth)
    print()
    print(pd.DataFrame(rows).to_markdown(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo").add_argument("--queries", type=int, default=200)
    big = commands.add_parser("scale")
    big.add_argument("--vectors", type=int, default=1_000_000)
    big.add_argument("--dim", type=int, default=512)
    big.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    if args.command == "demo":
        demo(args.queries)
    else:
        scale(args.vectors, args.dim, args.queries)


if __name__ == "__main__":
    main()
