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

from pipeline.evaluation.metrics import CIRR_KS, CIRR_SUBSET_KS, cirr_summary, fashioniq_summary, recall_at_k
from pipeline.evaluation.ranking import MISSED, Ranked, rank
from pipeline.features.encode import text_features
from pipeline.models.composition import QueryMode
from pipeline.models.retrieval import RetrievalModel
from pipeline.runtime import Runtime
from pipeline.triplets.query_text import relative_text

Protocol = Literal["fashioniq", "cirr", "catalog"]  # a catalogue is scored per category, as FashionIQ
Curve = list[dict[str, float]]


TOP = 10  # the top columns kept per query: what the served page shows


@dataclass
class Ranking:
    """One gallery scored against its queries: a FashionIQ category, or the whole of a CIRR split. The scores
    `query @ gallery.T` are never held whole; `ranked` streams them in chunks (pipeline/evaluation/ranking.py)."""

    category: str
    triplets: pd.DataFrame     # the queries, in row order
    names: np.ndarray          # gallery image names: the rows of `gallery`
    query: torch.Tensor        # [Q, D] composed query features
    gallery: torch.Tensor      # [G, D] gallery features
    reference: torch.Tensor    # [Q] gallery row of each query's reference image
    target: torch.Tensor | None  # [Q] gallery row of each target; None on a test split (targets hidden)
    _ranked: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def ranked(self, without_reference: bool = False, k: int = TOP) -> Ranked:
        """Each query's target rank and top k over the gallery, its reference removed if `without_reference`."""
        key = ("gallery", without_reference, k)
        if key not in self._ranked:
            self._ranked[key] = rank(self.query, self.gallery, self.target, k,
                                     excluded=self.reference if without_reference else None)
        return self._ranked[key]

    def subset_ranked(self, k: int = max(CIRR_SUBSET_KS)) -> Ranked:
        """CIRR's subset protocol: each query ranked within its img_set, its reference removed."""
        key = ("subset", True, k)
        if key not in self._ranked:
            self._ranked[key] = rank(self.query, self.gallery, self.target, k, excluded=self.reference,
                                     members=self.subset_members())
        return self._ranked[key]

    def subset_members(self) -> torch.Tensor:
        """[Q, M] the gallery rows of each query's img_set members (-1 padded)."""
        row = {name: i for i, name in enumerate(self.names)}
        members = [[row[m] for m in subset if m in row] for subset in self.triplets["subset"]]
        padded = torch.full((len(members), max(map(len, members), default=0)), -1, dtype=torch.long)
        for q, rows in enumerate(members):
            padded[q, :len(rows)] = torch.tensor(rows, dtype=torch.long)
        return padded


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
            features = gallery_features[torch.from_numpy(rows)].to(model.device)  # ranked where the model runs
            reference = torch.tensor([column[n] for n in triplets["reference"]], dtype=torch.long)
            with torch.no_grad():
                query = model.compose(features[reference.to(model.device)],
                                      texts[torch.from_numpy(in_category)].to(model.device), mode)
            hidden = (triplets["target"] == "").any()
            target = None if hidden else torch.tensor([column[n] for n in triplets["target"]], dtype=torch.long)
            rankings.append(Ranking(str(category), triplets, names, query, features, reference, target))
        return rankings


def _curve(recalls: dict[str, dict[int, float]], ks: list[int]) -> Curve:
    """Recall@k rows for `dvc plots`: one column per category and their average (the column dvc.yaml plots)."""
    return [{"k": k, **{category: round(r[k], 4) for category, r in recalls.items()},
             "average": round(float(np.mean([r[k] for r in recalls.values()])), 4)} for k in ks]


def fashioniq_metrics(rankings: list[Ranking], ks: list[int]) -> tuple[dict, Curve]:
    ks = sorted(set(ks) | {10, 50})
    recalls = {r.category: recall_at_k(r.ranked().ranks, ks) for r in rankings}
    return fashioniq_summary(recalls), _curve(recalls, ks)


def cirr_metrics(rankings: list[Ranking], ks: list[int]) -> tuple[dict, Curve]:
    (ranking,) = rankings
    ks = sorted(set(ks) | set(CIRR_KS))
    recall = recall_at_k(ranking.ranked(without_reference=True).ranks, ks)
    subset = recall_at_k(ranking.subset_ranked().ranks, CIRR_SUBSET_KS)
    return cirr_summary(recall, subset), _curve({ranking.category: recall}, ks)


METRICS: dict[Protocol, Callable[[list[Ranking], list[int]], tuple[dict, Curve]]] = {
    "fashioniq": fashioniq_metrics, "cirr": cirr_metrics, "catalog": fashioniq_metrics}


def headline(protocol: Protocol, rankings: list[Ranking]) -> dict[str, float]:
    """R@10, R@50 (category averages for FashionIQ and catalogues) and the headline mean: stage 2's val curves."""
    summary, curve = METRICS[protocol](rankings, [10, 50])
    at = {row["k"]: row["average"] for row in curve}
    mean = summary["mean"] if protocol == "cirr" else summary["average"]["mean"]
    return {"R@10": at[10], "R@50": at[50], "mean": mean}


def top_results(protocol: Protocol, rankings: list[Ranking]) -> pd.DataFrame:
    """Every query's top 10 (names and scores, best first) and its target's 1-based rank, ranked as the protocol
    ranks them (CIRR without the reference): what the served page shows for the validation queries."""
    rows = []
    for ranking in rankings:
        ranked = ranking.ranked(without_reference=protocol == "cirr")
        for q, triplet in enumerate(ranking.triplets.itertuples()):
            columns = ranked.columns(q)
            rows.append({"triplet_id": triplet.triplet_id, "category": ranking.category, "source": triplet.source,
                         "reference": triplet.reference, "target": triplet.target, "caption1": triplet.caption1,
                         "caption2": triplet.caption2, "query_text": triplet.query_text,
                         "target_rank": 0 if int(ranked.ranks[q]) == MISSED else int(ranked.ranks[q]) + 1,
                         "top": [str(ranking.names[c]) for c in columns],
                         "scores": [round(float(s), 5) for s in ranked.top_scores[q, :len(columns)]]})
    return pd.DataFrame(rows)


def cirr_submissions(ranking: Ranking) -> dict[str, dict[str, object]]:
    """The CIRR server's two files for a test split: per pairid the top-50 names (recall) and the top-3 of the
    img_set (recall_subset), the reference removed from both, as CLIP4Cir's cirr_test_submission.py writes them."""
    files = {}
    for metric, ranked in (("recall", ranking.ranked(without_reference=True, k=50)),
                           ("recall_subset", ranking.subset_ranked(k=3))):
        files[metric] = {"version": "rc2", "metric": metric,
                         **{str(pair_id): ranking.names[ranked.columns(q)].tolist()
                            for q, pair_id in enumerate(ranking.triplets["pair_id"])}}
    return files
