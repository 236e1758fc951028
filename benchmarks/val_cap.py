"""What capping the val queries per category costs in the recall's spread: from one `evaluate` run's rankings, R@10
(macro over categories, as eval.json's average) recomputed on many draws of at most `cap` queries per category.

    python benchmarks/val_cap.py data/evaluation/rankings.parquet --caps 50 100 300 1000

A catalogue without annotated val pairs gets `triplets.generated_val_per_category` generated queries per category
(300 by default, drawn by `seed`), so evaluation costs the same at any catalogue size; FashionIQ and CIRR keep every
query. The spread is what that cap gives up: over draws from this run's queries, and (the binomial standard
deviation from each category's recall) over independent query sets of that size, which is the noise a difference
between two runs must clear; draws from a finite set understate it as the cap nears the set's size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from common import markdown_table


def macro_recall(ranks: dict[str, np.ndarray], k: int) -> float:
    """Macro R@k in percent from 1-based target ranks (0 = never retrieved)."""
    return float(np.mean([np.mean((r > 0) & (r <= k)) * 100 for r in ranks.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rankings", type=Path)
    parser.add_argument("--caps", type=int, nargs="+", default=[25, 50, 100, 200, 300])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = pd.read_parquet(args.rankings, columns=["category", "target_rank"])
    ranks = {c: g["target_rank"].to_numpy() for c, g in table.groupby("category")}
    rng = np.random.default_rng(args.seed)
    hit = {c: float(np.mean((r > 0) & (r <= 10))) for c, r in ranks.items()}

    def binomial_std(cap: int) -> float:
        """The macro recall's standard deviation over independent query sets of that size (in percent)."""
        return float(np.sqrt(sum(p * (1 - p) / min(cap, len(ranks[c])) for c, p in hit.items())) / len(hit) * 100)

    rows = [["all", f"{sum(map(len, ranks.values())):,}", f"{macro_recall(ranks, 10):.2f}", "-",
             f"{binomial_std(10**9):.2f}", "-"]]
    for cap in args.caps:
        draws = [macro_recall({c: r[rng.choice(len(r), min(cap, len(r)), replace=False)] for c, r in ranks.items()},
                              10) for _ in range(args.draws)]
        low, high = np.percentile(draws, [2.5, 97.5])
        rows.append([str(cap), f"{sum(min(cap, len(r)) for r in ranks.values()):,}", f"{np.mean(draws):.2f}",
                     f"{np.std(draws):.2f}", f"{binomial_std(cap):.2f}", f"{low:.2f} - {high:.2f}"])
    print(f"{args.rankings}: {len(ranks)} categories, {args.draws} draws per cap")
    print(markdown_table(["cap per category", "queries", "mean R@10", "std over draws", "std, independent sets",
                          "95% of draws"], rows))


if __name__ == "__main__":
    main()
