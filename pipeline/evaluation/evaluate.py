"""The `evaluate` stage: recall of the stage-2 model on the val split by the benchmark's protocol
(pipeline/evaluation/protocols.py) with the number of queries scored and dropped, each recall in context (chance
level, gallery size, the stage-1 model's recall: pipeline/evaluation/context.py), the recall@K curve, every val
query's top 10 (what `fashion-cir serve` shows) and a picture of a few of them (pipeline/evaluation/retrievals.py),
and for CIRR the test-server files.

The query text is the validation-form join of the two relative captions (plus the reference prompt when
triplets.reference_prompt is on), and recall is in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from pipeline.config import Params
from pipeline.data.cirr import TEST_SPLIT as CIRR_TEST_SPLIT
from pipeline.data.store import ImageStore
from pipeline.errors import PipelineError
from pipeline.evaluation.context import recall_context, stage1_sum_rankings
from pipeline.evaluation.protocols import METRICS, Protocol, QuerySet, Ranking, cirr_submissions, top_results
from pipeline.evaluation.retrievals import write_retrieval_grid
from pipeline.features.encode import stored_image_features
from pipeline.io import atomic_path, write_json, write_parquet
from pipeline.models.clip import load_checkpoint, tokenizer_for
from pipeline.models.preprocessing import preprocessing
from pipeline.models.retrieval import RetrievalModel
from pipeline.paths import Paths
from pipeline.runtime import Runtime


def split_features(model: RetrievalModel, store: ImageStore, captions: pd.DataFrame, split: str, batch_size: int,
                   runtime: Runtime) -> tuple[pd.DataFrame, torch.Tensor]:
    """The split's gallery (its captioned images the store could decode) and their features."""
    gallery, rows, _ = store.select(captions[captions["split"] == split].reset_index(drop=True))
    return gallery, stored_image_features(model, store, rows, batch_size, runtime, desc=f"embed {split} gallery")


def query_counts(protocol: Protocol, rankings: list[Ranking], queries: QuerySet) -> dict:
    """How many val queries were scored and how many dropped (an image missing from the gallery), per category
    (the whole split for CIRR), and a plain statement where the queries were generated rather than written by
    people, so two runs on different data never compare as equals."""
    counts: dict = {ranking.category: {"queries": len(ranking.triplets),
                                       "dropped": queries.dropped.get(ranking.category, 0)} for ranking in rankings}
    if protocol == "cirr":
        counts = next(iter(counts.values()))
    if (queries.triplets["source"] == "generated").all():
        counts["val_queries"] = ("generated from the catalogue's attributes by templates (held-out val images), "
                                 "not written by people")
    return counts


def write_submissions(directory: Path, files: dict[str, dict[str, dict[str, object]]], note: str) -> None:
    """The submissions folder, whole or not at all: one JSON per file plus an index saying what is there."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        for name, content in files.items():
            (tmp / f"{name}.json").write_text(json.dumps(content, sort_keys=True) + "\n")
        write_json(tmp / "index.json", {"files": sorted(f"{name}.json" for name in files), "note": note})


def run(params: Params, paths: Paths) -> dict:
    """Evaluate, write every output, and return metrics/eval_context.json's content (what the stage prints)."""
    settings, protocol, runtime = params.eval, params.data.source, Runtime.start(params.compute)
    model = load_checkpoint(paths.stage2_dir)
    runtime.prepare(model)
    store = ImageStore.open(paths.image_store)
    store.check(preprocessing(model), f"the checkpoint in {paths.stage2_dir}")
    tokenizer = tokenizer_for(model.arch)
    captions = pd.read_parquet(paths.captions)
    gallery, features = split_features(model, store, captions, "val", settings.batch_size, runtime)
    queries = QuerySet.build(gallery, paths.triplets("val"))
    rankings = queries.rankings(model, tokenizer, features, settings.query, settings.batch_size, runtime)
    if not rankings:
        raise PipelineError(f"{paths.triplets('val')} has no pair whose images are in the val gallery; "
                            f"nothing to evaluate.")
    summary, curve = METRICS[protocol](rankings, settings.recall_ks)
    for key, value in query_counts(protocol, rankings, queries).items():
        summary[key] = {**summary[key], **value} if isinstance(value, dict) else value
    stage1 = stage1_sum_rankings(rankings, paths.image_features, paths.query_features)
    context = recall_context(protocol, rankings, summary, stage1)
    write_json(paths.eval_metrics, summary)
    write_json(paths.eval_context, context)
    write_json(paths.recall_curve, curve)
    top = top_results(protocol, rankings)
    write_parquet(paths.val_rankings, pa.Table.from_pandas(top, preserve_index=False))
    write_retrieval_grid(paths.retrieval_grid, top, captions)

    files: dict[str, dict[str, dict[str, object]]] = {}
    note = "FashionIQ has no public test server: nothing to submit."
    test_path = paths.triplets(CIRR_TEST_SPLIT)
    if protocol == "cirr" and test_path.is_file():
        gallery, features = split_features(model, store, captions, CIRR_TEST_SPLIT, settings.batch_size, runtime)
        test = QuerySet.build(gallery, test_path).rankings(model, tokenizer, features, settings.query,
                                                           settings.batch_size, runtime)
        note = f"no {CIRR_TEST_SPLIT} pair has its reference image; nothing to submit."
        if test:
            files = {f"cirr-{CIRR_TEST_SPLIT}-{metric}": content
                     for metric, content in cirr_submissions(test[0]).items()}
            note = (f"{len(test[0].triplets)} {CIRR_TEST_SPLIT} pairs; upload each file to the CIRR evaluation "
                    f"server (https://cirr.cecs.anu.edu.au/).")
    write_submissions(paths.submissions, files, note)
    return context
