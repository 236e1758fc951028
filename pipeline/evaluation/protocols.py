"""The benchmarks' evaluation protocols, as the literature computes them.

FashionIQ (CLIP4Cir's validation): per category, each val pair's composed query against that category's val image
split, the reference NOT removed; R@10/R@50 per category, their averages and the mean of the two.
CIRR: each val pair's query against every val image with the reference removed from its ranking; R@1/5/10/50,
Rsubset@1/2/3 within the pair's img_set, and the headline (R@5 + Rsubset@1) / 2; for CIRR's test1 split (hidden
targets), the two files the CIRR evaluation server accepts.

`eval.query` gives the single-modality ablations: `image` ranks by the reference image alone, `text` by the relative
captions alone (without the reference prompt, which is itself derived from the reference image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from pipeline.evaluation.metrics import (
    CIRR_KS,
    CIRR_SUBSET_KS,
    MISSED,
    cirr_summary,
    fashioniq_summary,
    recall_at_k,
    target_ranks,
    top_k,
)
from pipeline.features.encode import text_features
from pipeline.models.composition import QueryMode
from pipeline.models.retrieval import RetrievalModel
from pipeline.runtime import Runtime
from pipeline.triplets.query_text import relative_text

Protocol = Literal["fashioniq", "cirr", "catalog"]  # a catalogue is scored per category, as FashionIQ
Curve = list[dict[str, float]]


@dataclass
class Ranking:
    """One gallery scored against its queries: a FashionIQ category, or the whole of a CIRR split."""

    category: str
    triplets: pd.DataFrame     # the queries, in row order
    names: np.ndarray          # gallery image names: the columns of `scores`
    scores: torch.Tensor       # [Q, G]
    reference: torch.Tensor    # [Q] column of each query's reference image
    target: torch.Tensor | None  # [Q] column of each target; None on a test split (targets hidden)

    def reference_mask(self) -> torch.Tensor:
        """[Q, G] True at each query's reference image."""
        mask = torch.zeros(self.scores.shape, dtype=torch.bool)
        mask[torch.arange(len(mask)), self.reference] = True
        return mask

    def outside_subset(self) -> torch.Tensor:
        """[Q, G] True where an image is not in the query's img_set, or is its reference (CIRR's subset protocol)."""
        column = {name: i for i, name in enumerate(self.names)}
        inside = torch.zeros(self.scores.shape, dtype=torch.bool)
        for q, members in enumerate(self.triplets["subset"]):
            inside[q, [column[m] for m in members if m in column]] = True
        return ~inside | self.reference_mask()


@dataclass
class QuerySet:
    """A split's gallery (row i of `gallery` is row i of the features passed to `rankings`) and its triplets."""

    gallery: pd.DataFrame  # name, category
    triplets: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)  # per category: left out, an image not in the gallery

    @classmethod
    def build(cls, gallery: pd.DataFrame, triplets_path: Path) -> QuerySet:
        """Keep the triplets whose reference and (unless hidden) target are in `gallery`'s rows of their category
        (the images that could be decoded), and count the others."""
        gallery = gallery[["name", "category"]].reset_index(drop=True)
        triplets = pd.read_parquet(triplets_path)
        present = set(zip(gallery["category"], gallery["name"]))
        keep = np.array([(c, r) in present and (not t or (c, t) in present)
                         for c, r, t in zip(triplets["category"], triplets["reference"], triplets["target"],
                                            strict=True)], dtype=bool)
        dropped = triplets["category"][~keep].value_counts().to_dict() if len(triplets) else {}
        return cls(gallery, triplets[keep].reset_index(drop=True), {str(c): int(n) for c, n in dropped.items()})

    def query_texts(self, mode: QueryMode) -> list[str]:
        if mode == "text":
            return [relative_text(a, b) for a, b in zip(self.triplets["caption1"], self.triplets["caption2"],
                                                        strict=True)]
        return self.triplets["query_text"].tolist()

    def rankings(self, model: RetrievalModel, tokenizer, gallery_features: torch.Tensor, mode: QueryMode,
                 batch_size: int, runtime: Runtime = Runtime()) -> list[Ranking]:
        """One Ranking per category, for `gallery_features` computed by `model`'s image tower."""
        texts = text_features(model, tokenizer, self.query_texts(mode), batch_size, runtime, desc="queries")
        rankings = []
        for category in dict.fromkeys(self.triplets["category"]):
            in_category = (self.triplets["category"] == category).to_numpy(copy=True)
            triplets = self.triplets[in_category].reset_index(drop=True)
            rows = np.flatnonzero((self.gallery["category"] == category).to_numpy(copy=True))
            names = self.gallery["name"].to_numpy()[rows]
            column = {name: i for i, name in enumerate(names)}
            features = gallery_features[torch.from_numpy(rows)]
            reference = torch.tensor([column[n] for n in triplets["reference"]], dtype=torch.long)
            with torch.no_grad():
                query = model.compose(features[reference].to(model.device),
                                      texts[torch.from_numpy(in_category)].to(model.device), mode).cpu()
            hidden = (triplets["target"] == "").any()
            target = None if hidden else torch.tensor([column[n] for n in triplets["target"]], dtype=torch.long)
            rankings.append(Ranking(str(category), triplets, names, query @ features.T, reference, target))
        return rankings


def _curve(recalls: dict[str, dict[int, float]], ks: list[int]) -> Curve:
    """Recall@k rows for `dvc plots`: one column per category and their average (the column dvc.yaml plots)."""
    return [{"k": k, **{category: round(r[k], 4) for category, r in recalls.items()},
             "average": round(float(np.mean([r[k] for r in recalls.values()])), 4)} for k in ks]


def fashioniq_metrics(rankings: list[Ranking], ks: list[int]) -> tuple[dict, Curve]:
    ks = sorted(set(ks) | {10, 50})
    recalls = {r.category: recall_at_k(target_ranks(r.scores, r.target), ks) for r in rankings}
    return fashioniq_summary(recalls), _curve(recalls, ks)


def cirr_metrics(rankings: list[Ranking], ks: list[int]) -> tuple[dict, Curve]:
    (ranking,) = rankings
    ks = sorted(set(ks) | set(CIRR_KS))
    recall = recall_at_k(target_ranks(ranking.scores, ranking.target, ranking.reference_mask()), ks)
    subset = recall_at_k(target_ranks(ranking.scores, ranking.target, ranking.outside_subset()), CIRR_SUBSET_KS)
    return cirr_summary(recall, subset), _curve({ranking.category: recall}, ks)


METRICS: dict[Protocol, Callable[[list[Ranking], list[int]], tuple[dict, Curve]]] = {
    "fashioniq": fashioniq_metrics, "cirr": cirr_metrics, "catalog": fashioniq_metrics}


def headline(protocol: Protocol, rankings: list[Ranking]) -> dict[str, float]:
    """R@10, R@50 (category averages for FashionIQ and catalogues) and the headline mean: stage 2's val curves."""
    summary, curve = METRICS[protocol](rankings, [10, 50])
    at = {row["k"]: row["average"] for row in curve}
    mean = summary["mean"] if protocol == "cirr" else summary["average"]["mean"]
    return {"R@10": at[10], "R@50": at[50], "mean": mean}


def excluded_from_ranking(protocol: Protocol, ranking: Ranking) -> torch.Tensor | None:
    """What the protocol removes from a query's ranking: CIRR its reference image; FashionIQ nothing."""
    return ranking.reference_mask() if protocol == "cirr" else None


def top_results(protocol: Protocol, rankings: list[Ranking], k: int = 10) -> pd.DataFrame:
    """Every query's top k (names and scores, best first) and its target's 1-based rank, ranked as the protocol
    ranks them: what the served page shows for the validation queries."""
    rows = []
    for ranking in rankings:
        excluded = excluded_from_ranking(protocol, ranking)
        top = top_k(ranking.scores, k, excluded)
        ranks = target_ranks(ranking.scores, ranking.target, excluded)
        for q, (triplet, columns) in enumerate(zip(ranking.triplets.itertuples(), top, strict=True)):
            rows.append({"triplet_id": triplet.triplet_id, "category": ranking.category, "source": triplet.source,
                         "reference": triplet.reference, "target": triplet.target, "caption1": triplet.caption1,
                         "caption2": triplet.caption2, "query_text": triplet.query_text,
                         "target_rank": 0 if int(ranks[q]) == MISSED else int(ranks[q]) + 1,
                         "top": [str(ranking.names[c]) for c in columns],
                         "scores": [round(float(ranking.scores[q, c]), 5) for c in columns]})
    return pd.DataFrame(rows)


def cirr_submissions(ranking: Ranking) -> dict[str, dict[str, object]]:
    """The CIRR server's two files for a test split: per pairid the top-50 names (recall) and the top-3 of the
    img_set (recall_subset), the reference removed from both, as CLIP4Cir's cirr_test_submission.py writes them."""
    files = {}
    for metric, k, excluded in (("recall", 50, ranking.reference_mask()),
                                ("recall_subset", 3, ranking.outside_subset())):
        top = top_k(ranking.scores, k, excluded)
        files[metric] = {"version": "rc2", "metric": metric,
                         **{str(pair_id): ranking.names[columns].tolist()
                            for pair_id, columns in zip(ranking.triplets["pair_id"], top, strict=True)}}
    return files
