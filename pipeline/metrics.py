"""Recall@K as the composed-retrieval literature computes it, and the metrics file layouts."""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of each query's target among its row of gallery scores.

    Ties count against the target (an item scored equal to it ranks ahead), so a degenerate model that scores
    everything the same gets no credit from the order of the gallery.
    """
    target_scores = scores.gather(1, target[:, None])
    ahead = (scores >= target_scores).sum(dim=1) - 1
    return ahead


def recall_at_k(ranks: torch.Tensor, ks: list[int]) -> dict[int, float]:
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
