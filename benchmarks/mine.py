"""Throughput of hard-negative mining (the `mine` stage's paths) against a plain exact brute force in torch.

    python benchmarks/mine.py                                   # CPU, defaults (20000 x 512 gallery, 5000 queries)
    python benchmarks/mine.py --gallery 5000 --queries 1000     # quick check
    python benchmarks/mine.py --features data/embeddings        # the demo's real features (after `dvc repro embed`)
    python benchmarks/mine.py --gallery 200000 --queries 20000 --kinds flat   # GPU box: torch on the GPU, FAISS flat

Run from the repository root. Every path is timed through the real code, `pipeline.negatives.hard.mine_hard_negatives`,
once: what one `mine` call costs. `exact torch` is its flat search in torch on `--device` (the path the stage takes
where CUDA is present: chunked matmul, skipped candidates masked, top-k). `faiss <kind>` is its FAISS path on the
CPU (index build, search, and the Python loop that drops the target and widens the search when too few candidates
are left), forced here with FASHION_CIR_DEVICE=cpu. The baseline is an exact brute force in torch
(pipeline/topk.py: query-gallery matmul, target masked, top-k) on `--device`; both start from and end with numpy
arrays, copies included; its time is the median of a few calls. Recall is the fraction of the exact top-k (FAISS
flat's, or exact torch's when flat is not run) that a path's mined set contains; exact paths should reach 1 (less
only through ties).

Synthetic data: `--gallery` normalised features drawn around random cluster centres (about 100 per cluster), and
`--queries` queries each drawn from a random target's cluster, so that neighbours are mostly within a cluster, as
with real image features, and approximate indexes can miss some of them. With `--features DIR` the gallery is
DIR/images.parquet and the queries the first `--queries` rows of DIR/queries.parquet (`--gallery` and `--dim` are
then ignored); targets are random gallery rows either way.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from common import (
    append_result,
    count_flops,
    describe,
    device_from_arg,
    markdown_table,
    matmul_ceiling,
    synchronize,
    time_per_call,
)
from pipeline.negatives.hard import mine_hard_negatives
from pipeline.topk import block_rows, top_k


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def synthetic(n_gallery: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clustered normalised gallery, queries near random targets' clusters, and the targets' gallery rows."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n_gallery // 100)
    centres = _normalise(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    noise = 0.6 / np.sqrt(dim)      # noise norm about 0.6: cosine within a cluster about 0.7, across about 0
    cluster = rng.integers(n_clusters, size=n_gallery)
    gallery = _normalise(centres[cluster] + noise * rng.standard_normal((n_gallery, dim), dtype=np.float32))
    targets = rng.integers(n_gallery, size=n_queries)
    queries = _normalise(centres[cluster[targets]] + noise * rng.standard_normal((n_queries, dim), dtype=np.float32))
    return queries, gallery, targets


def real(features_dir: Path, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo's image features as the gallery and its query-text features as queries, with random targets."""
    from pipeline.features.table import read_features

    _, gallery = read_features(features_dir / "images.parquet")
    _, queries = read_features(features_dir / "queries.parquet")
    queries = queries[:n_queries]
    targets = np.random.default_rng(seed).integers(len(gallery), size=len(queries))
    return _normalise(queries), _normalise(gallery), targets


def brute_force(queries: np.ndarray, gallery: np.ndarray, targets: np.ndarray, k: int, device: torch.device
                ) -> np.ndarray:
    """Exact top-k gallery rows per query, the target excluded: pipeline/topk.py over the whole gallery, a chunk of
    queries at a time (chunks keep the score matrix under about 256 MiB)."""
    g = torch.from_numpy(gallery).to(device)
    t_all = torch.from_numpy(targets).to(device)

    def target(rows: slice, columns: slice) -> torch.Tensor:
        return torch.arange(columns.start, columns.stop, device=device)[None, :] == t_all[rows, None]

    found = top_k(torch.from_numpy(queries).to(device), g, min(k, len(gallery) - 1), target,
                  block_rows(len(gallery), 2**26), stable=False)[1]
    return found.cpu().numpy()


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of the fraction of the exact set (valid entries, not -1) that `found` contains."""
    hits = [len(np.intersect1d(f[f >= 0], e[e >= 0])) / max(1, (e >= 0).sum()) for f, e in zip(found, exact)]
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gallery", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--kinds", nargs="*", default=["flat", "hnsw", "ivf"], choices=["flat", "hnsw", "ivf"],
                        help="FAISS paths to time on the CPU (none: only the torch paths)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="FAISS and torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="for the torch brute force; default cuda if available")
    parser.add_argument("--features", type=Path, default=None, help="folder with images.parquet, queries.parquet")
    parser.add_argument("--jsonl", type=Path, default=None, help="append one JSON line per method to this file")
    args = parser.parse_args()

    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    device = device_from_arg(args.device)
    if args.features is not None:
        queries, gallery, targets = real(args.features, args.queries, args.seed)
        data = f"real features from {args.features}"
    else:
        queries, gallery, targets = synthetic(args.gallery, args.queries, args.dim, args.seed)
        data = "synthetic clustered features"
    n_q, (n_g, dim), k = len(queries), gallery.shape, args.k
    print(describe(device))
    print(f"{data}: gallery {n_g} x {dim}, {n_q} queries, k={k}, {args.threads} CPU threads, "
          f"faiss {faiss.__version__}\n", flush=True)

    # The ceiling and the brute force before FAISS runs: its OpenMP threads can keep spinning for a while after
    # a call and slow torch's down.
    ceiling = matmul_ceiling(device, torch.float32)

    def run_brute() -> np.ndarray:
        return brute_force(queries, gallery, targets, k, device)

    brute_s = time_per_call(run_brute, device, warmup=1, iters=3)
    brute_found = run_brute()
    brute_flops = count_flops(run_brute)
    print(f"brute force ({device.type}): {brute_s:.2f} s", flush=True)

    # The stage's exact torch path, then its FAISS paths (forced onto the CPU, as on a machine without CUDA).
    results: dict[str, tuple[float, np.ndarray]] = {}
    start = time.perf_counter()
    found, _ = mine_hard_negatives(queries, gallery, targets, k, "flat", seed=args.seed, device=device)
    synchronize(device)
    results[f"exact torch ({device.type})"] = (time.perf_counter() - start, found)
    print(f"exact torch ({device.type}): {results[f'exact torch ({device.type})'][0]:.2f} s", flush=True)
    os.environ["FASHION_CIR_DEVICE"] = "cpu"
    for kind in sorted(args.kinds, key=lambda kd: kd != "flat"):
        start = time.perf_counter()
        found, _ = mine_hard_negatives(queries, gallery, targets, k, kind, seed=args.seed)
        results[f"faiss {kind}"] = (time.perf_counter() - start, found)
        print(f"faiss {kind}: {results[f'faiss {kind}'][0]:.2f} s", flush=True)
    exact = results["faiss flat"][1] if "faiss flat" in results else results[f"exact torch ({device.type})"][1]
    print()

    header = ["method", "build + search s", "queries/s", "vs brute force", f"recall@{k} vs exact"]
    rows = [[f"torch brute force ({device.type})", f"{brute_s:.3f}", f"{n_q / brute_s:.0f}", "1.00x",
             f"{recall(brute_found, exact):.4f}"]]
    records = [{"method": f"brute_{device.type}", "seconds": brute_s, "recall": recall(brute_found, exact)}]
    for method, (seconds, found) in results.items():
        rows.append([f"{method} (mine_hard_negatives)", f"{seconds:.3f}", f"{n_q / seconds:.0f}",
                     f"{brute_s / seconds:.2f}x", f"{recall(found, exact):.4f}"])
        records.append({"method": method, "seconds": seconds, "recall": recall(found, exact)})
    print(markdown_table(header, rows))
    achieved = brute_flops / brute_s
    print(f"\nbrute force: {brute_flops / 1e9:.1f} GFLOP per call, {achieved / 1e12:.3f} TFLOP/s = "
          f"{achieved / ceiling:.0%} of the measured fp32 matmul ceiling ({ceiling / 1e12:.3f} TFLOP/s)")

    if args.jsonl is not None:
        common = {"benchmark": "mine", "device": describe(device), "data": data, "gallery": n_g, "dim": dim,
                  "queries": n_q, "k": k, "threads": args.threads, "seed": args.seed}
        for record in records:
            append_result(args.jsonl, {**common, **record, "queries_per_s": n_q / record["seconds"]})


if __name__ == "__main__":
    main()
