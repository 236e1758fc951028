"""Evaluation's chunked exact ranking (pipeline/evaluation/ranking.py): queries ranked per second and the peak memory
it takes, at gallery sizes up to a million, against the dense computation (the whole query x gallery matrix, then a
stable argsort) where that still fits.

    python benchmarks/rank.py                                  # CPU: galleries of 5,000 to 200,000
    python benchmarks/rank.py --galleries 50000 1000000 --queries 20000     # a GPU

Features are random unit vectors (the rate does not depend on what they hold). Peak memory is the process's
resident peak on a CPU (each size in a fresh process, so one size's peak does not hide the next's) and
torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import append_result, describe, device_from_arg, markdown_table, synchronize
from pipeline.evaluation.ranking import rank


def one_size(gallery_size: int, queries: int, dim: int, dense: bool, device: torch.device) -> dict:
    """Seconds and peak bytes of ranking `queries` against `gallery_size` (chunked, or dense)."""
    gen = torch.Generator().manual_seed(0)
    query = torch.nn.functional.normalize(torch.randn(queries, dim, generator=gen), dim=-1).to(device)
    gallery = torch.nn.functional.normalize(torch.randn(gallery_size, dim, generator=gen), dim=-1).to(device)
    target = torch.randint(0, gallery_size, (queries,), generator=gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    if dense:
        scores = query @ gallery.T
        ahead = scores >= scores.gather(1, target.to(device)[:, None])
        ranks = (ahead.sum(dim=1) - 1).cpu()
        top = torch.argsort(scores, dim=1, descending=True, stable=True)[:, :10].cpu()
    else:
        ranked = rank(query, gallery, target, 10)
        ranks, top = ranked.ranks, ranked.top
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": seconds, "peak": peak, "checksum": int(ranks.sum()) + int(top[:, 0].sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device")
    parser.add_argument("--galleries", type=int, nargs="+", default=[5_000, 20_000, 50_000, 200_000])
    parser.add_argument("--queries", type=int, default=5_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--dense-up-to", type=int, default=20_000, help="largest gallery also ranked densely")
    parser.add_argument("--jsonl", type=Path)
    parser.add_argument("--one", nargs=2, metavar=("GALLERY", "DENSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = device_from_arg(args.device)
    if args.one:
        print(json.dumps(one_size(int(args.one[0]), args.queries, args.dim, args.one[1] == "1", device)))
        return
    print(describe(device))
    rows = []
    for size in args.galleries:
        for dense in ([True, False] if size <= args.dense_up_to else [False]):
            command = [sys.executable, __file__, "--one", str(size), str(int(dense)), "--queries", str(args.queries),
                       "--dim", str(args.dim), *(["--device", args.device] if args.device else [])]
            result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            how = "dense" if dense else "chunked"
            rows.append([f"{size:,}", how, f"{args.queries / result['seconds']:,.0f}",
                         f"{result['peak'] / 2**30:.2f}", str(result["checksum"])])
            if args.jsonl:
                append_result(args.jsonl, {"benchmark": "rank", "device": describe(device), "gallery": size,
                                           "queries": args.queries, "dim": args.dim, "how": how,
                                           "per_s": args.queries / result["seconds"], "peak": result["peak"]})
    print(f"{args.queries:,} queries of dimension {args.dim}; equal checksums mean equal ranks and top 1")
    print(markdown_table(["gallery", "ranking", "queries/s", "peak GiB", "checksum"], rows))


if __name__ == "__main__":
    main()
