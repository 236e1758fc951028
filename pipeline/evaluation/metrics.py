"""Recall@K as the composed-retrieval literature computes it, and the metrics file layouts."""

from __future__ import annotations

import numpy as np
import torch

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)


def recall_at_k(ranks: torch.Tensor, ks: list[int] | tuple[int, ...]) -> dict[int, float]:
    """Percentage of queries whose target ranks within the top k, for each k."""
    if len(ranks) == 0:
        return {k: float("nan") for k in ks}
    return {k: float((ranks < k).float().mean() * 100) for k in ks}


def fashioniq_summary(per_category: dict[str, dict[int, float]]) -> dict[str, dict[str, float]]:
    """The contract's metrics/eval.json: R@10 and R@50 per category, their averages and the mean of the two."""
    summary: dict[str, dict[str, float]] = {
        category: {"R@10": round(r[10], 4), "R@50": round(r[50], 4)} for category, r in per_category.items()}
    r10 = float(np.mean([r[10] for r in per_category.values()]))
    r50 = float(np.mean([r[50] for r in per_category.values()]))
    summary["average"] = {"R@10": round(r10, 4), "R@50": round(r50, 4), "mean": round((r10 + r50) / 2, 4)}
    return summary


def cirr_summary(recall: dict[int, float], subset_recall: dict[int, float]) -> dict[str, float]:
    """CIRR's metrics/eval.json: R@1/5/10/50 (reference removed), Rsubset@1/2/3, and the headline
    mean = (R@5 + Rsubset@1) / 2."""
    summary = {f"R@{k}": round(recall[k], 4) for k in CIRR_KS}
    summary.update({f"Rsubset@{k}": round(subset_recall[k], 4) for k in CIRR_SUBSET_KS})
    summary["mean"] = round((recall[5] + subset_recall[1]) / 2, 4)
    return summary
