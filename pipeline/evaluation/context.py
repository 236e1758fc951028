"""Recall in context: each recall `evaluate` reports, beside what it is worth.

A recall@10 of 100 says nothing on a gallery of eight images: a random ranking puts every target in the top 10. So
beside metrics/eval.json, `evaluate` writes metrics/eval_context.json with, per category (the split, for CIRR):

    gallery      images each query is ranked against (CIRR: the split's val images; its reference is removed)
    queries      val queries scored
    R@K          the model's recall, as in eval.json
    chance       the recall a random ranking is expected to reach: the mean over queries of min(K, n) / n, where n
                 is how many images the query's ranking holds
    stage1_sum   the recall of the stage-1 model composing by the normalised sum of its static features (the
                 `embed` stage's, which stage 2 keeps frozen), on the same queries and gallery: what stage 2 added
    small        chance R@10 is SMALL_CHANCE_R10 or more: the category's recall says little about any model

and, for categories, three averages that say what they average: `macro` over categories as FashionIQ reports it
(eval.json's `average`), `over_queries` where each query weighs the same, and `macro_without_small`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.evaluation.metrics import CIRR_KS, CIRR_SUBSET_KS
from pipeline.evaluation.protocols import METRICS, Protocol, Ranking
from pipeline.features.table import read_features
from pipeline.models.composition import normalised_sum

SMALL_CHANCE_R10 = 50.0
CATEGORY_KS = (10, 50)


def chance_recall(ranked: torch.Tensor, ks: tuple[int, ...]) -> dict[int, float]:
    """Expected recall@k in percent of a random ranking, averaged over queries; `ranked[q]` is how many images
    query q's ranking holds (its target among them)."""
    n = ranked.double().clamp(min=1)
    return {k: float((n.clamp(max=k) / n).mean() * 100) for k in ks}


def _rows(keys: pd.Series, wanted: np.ndarray | pd.Series, what: str, path: Path) -> torch.Tensor:
    position = {key: i for i, key in enumerate(keys)}
    missing = [w for w in wanted if w not in position]
    if missing:
        raise PipelineError(f"{path} has no feature for {what} {missing[0]!r}; run `dvc repro` so the `embed` stage "
                            f"covers the val split.")
    return torch.tensor([position[w] for w in wanted], dtype=torch.long)


def stage1_sum_rankings(rankings: list[Ranking], image_path: Path, query_path: Path) -> list[Ranking]:
    """`rankings` scored again by the stage-1 model's static features: each query the normalised sum of its
    reference's and its text's feature, against the same gallery columns."""
    image_ids, images = read_features(image_path)
    val = image_ids[image_ids["split"] == "val"].drop_duplicates("name")  # one file listed in two categories
    image_ids, images = val.reset_index(drop=True), torch.from_numpy(images[val.index.to_numpy()])
    query_ids, texts = read_features(query_path)
    texts = torch.from_numpy(texts.copy())  # Arrow's buffer is read-only
    scored = []
    for ranking in rankings:
        gallery = F.normalize(images[_rows(image_ids["name"], ranking.names, "image", image_path)].float(), dim=-1)
        text = texts[_rows(query_ids["triplet_id"], ranking.triplets["triplet_id"], "query", query_path)].float()
        query = normalised_sum(gallery[ranking.reference], text)
        scored.append(replace(ranking, query=query, gallery=gallery))
    return scored


def _recalls(block: dict) -> dict[str, float]:
    return {f"R@{k}": block[f"R@{k}"] for k in CATEGORY_KS}


def _category_context(rankings: list[Ranking], summary: dict, stage1: dict) -> dict[str, dict]:
    context = {}
    for ranking in rankings:
        chance = chance_recall(torch.full((len(ranking.triplets),), len(ranking.names)), CATEGORY_KS)
        context[ranking.category] = {
            "gallery": len(ranking.names), "queries": len(ranking.triplets),
            **_recalls(summary[ranking.category]),
            "chance": {f"R@{k}": round(v, 4) for k, v in chance.items()},
            "stage1_sum": _recalls(stage1[ranking.category]),
            "small": chance[10] >= SMALL_CHANCE_R10}
    return context


def _average(categories: dict[str, dict], weighted: bool) -> dict:
    """The mean of each recall over `categories` (weighted by their queries when `weighted`), with mean = the
    average of R@10 and R@50, as eval.json's headline."""
    if not categories:
        return {"categories": 0, "queries": 0}
    weights = np.array([c["queries"] if weighted else 1 for c in categories.values()], dtype=float)

    def mean(get) -> float:
        return round(float(np.average([get(c) for c in categories.values()], weights=weights)), 4)

    def block(get) -> dict[str, float]:
        r10, r50 = mean(lambda c: get(c)["R@10"]), mean(lambda c: get(c)["R@50"])
        return {"R@10": r10, "R@50": r50, "mean": round((r10 + r50) / 2, 4)}

    return {"categories": len(categories), "queries": int(sum(c["queries"] for c in categories.values())),
            **block(lambda c: c), "chance": block(lambda c: c["chance"]),
            "stage1_sum": block(lambda c: c["stage1_sum"])}


def recall_context(protocol: Protocol, rankings: list[Ranking], summary: dict, stage1_rankings: list[Ranking]
                   ) -> dict:
    """metrics/eval_context.json's content, from the rankings `summary` (eval.json's content) was computed on and
    the same rankings scored by the stage-1 model."""
    if protocol == "cirr":
        (ranking,) = rankings
        stage1, _ = METRICS[protocol](stage1_rankings, list(CIRR_KS))
        ranked = torch.full((len(ranking.triplets),), len(ranking.names) - 1)  # all but the reference
        subset = torch.tensor([len(set(members.tolist()) - {-1, int(reference)})
                               for members, reference in zip(ranking.subset_members(), ranking.reference, strict=True)])
        chance = {**{f"R@{k}": v for k, v in chance_recall(ranked, CIRR_KS).items()},
                  **{f"Rsubset@{k}": v for k, v in chance_recall(subset, CIRR_SUBSET_KS).items()}}
        return {"gallery": len(ranking.names), "queries": len(ranking.triplets),
                **{name: summary[name] for name in chance}, "chance": {k: round(v, 4) for k, v in chance.items()},
                "stage1_sum": {name: stage1[name] for name in [*chance, "mean"]},
                "small": chance["R@10"] >= SMALL_CHANCE_R10}
    stage1, _ = METRICS[protocol](stage1_rankings, list(CATEGORY_KS))
    categories = _category_context(rankings, summary, stage1)
    large = {name: c for name, c in categories.items() if not c["small"]}
    macro = {**_average(categories, weighted=False), **summary["average"]}  # eval.json's headline, to its digit
    return {**categories, "average": {"macro": macro,
                                      "over_queries": _average(categories, weighted=True),
                                      "macro_without_small": _average(large, weighted=False)}}


def context_line(protocol: Protocol, context: dict) -> str:
    """The `evaluate` stage's printed line: the headline recall and what it is worth."""
    if protocol == "cirr":
        return (f"evaluate: R@1 {context['R@1']:.2f}  R@5 {context['R@5']:.2f}  R@10 {context['R@10']:.2f}  "
                f"Rsubset@1 {context['Rsubset@1']:.2f} on {context['queries']} queries, {context['gallery']} images; "
                f"chance R@5 {context['chance']['R@5']:.2f}, Rsubset@1 {context['chance']['Rsubset@1']:.2f}; "
                f"stage 1 by sum R@5 {context['stage1_sum']['R@5']:.2f}, "
                f"Rsubset@1 {context['stage1_sum']['Rsubset@1']:.2f}")
    macro, by_query = context["average"]["macro"], context["average"]["over_queries"]
    line = (f"evaluate: R@10 {macro['R@10']:.2f}  R@50 {macro['R@50']:.2f}  mean {macro['mean']:.2f} "
            f"(macro average of {macro['categories']} categories; over all {by_query['queries']} queries "
            f"R@10 {by_query['R@10']:.2f}); chance R@10 {macro['chance']['R@10']:.2f}; "
            f"stage 1 by sum R@10 {macro['stage1_sum']['R@10']:.2f}")
    small = [name for name, c in context.items() if name != "average" and c["small"]]
    if small:
        rest = context["average"]["macro_without_small"]
        without = (f"without them R@10 {rest['R@10']:.2f} (chance {rest['chance']['R@10']:.2f}, stage 1 by sum "
                   f"{rest['stage1_sum']['R@10']:.2f})" if rest["categories"] else "no category is left without them")
        line += (f"; {len(small)} categor{'y' if len(small) == 1 else 'ies'} with chance R@10 >= "
                 f"{SMALL_CHANCE_R10:.0f}% ({', '.join(small)}): {without}")
    return line
