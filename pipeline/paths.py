"""Where every stage reads and writes: one `Paths` object, relative to the repository (tests pass a temporary one).
dvc.yaml declares the same paths (tests/test_dag.py checks that they agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    @property
    def synthetic(self) -> Path:
        """The demo catalogue, in FashionIQ's layout."""
        return self.root / "data/synthetic"

    @property
    def dataset_summary(self) -> Path:
        """What the `validate` stage read: images and pairs per split, what was dropped."""
        return self.root / "data/dataset.json"

    @property
    def captions_dir(self) -> Path:
        return self.root / "data/captions"

    @property
    def captions(self) -> Path:
        return self.captions_dir / "captions.parquet"

    @property
    def caption_cache(self) -> Path:
        """The persistent per-image cache (a DVC output that is never cleaned up)."""
        return self.captions_dir / "cache.sqlite"

    @property
    def triplets_dir(self) -> Path:
        return self.root / "data/triplets"

    def triplets(self, split: str) -> Path:
        return self.triplets_dir / f"{split}.parquet"

    @property
    def image_store(self) -> Path:
        return self.root / "data/image_store"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "data/embeddings"

    @property
    def image_features(self) -> Path:
        return self.embeddings_dir / "images.parquet"

    @property
    def query_features(self) -> Path:
        return self.embeddings_dir / "queries.parquet"

    @property
    def negatives_dir(self) -> Path:
        return self.root / "data/negatives"

    @property
    def negatives(self) -> Path:
        """The mined hard negatives of the training triplets."""
        return self.negatives_dir / "train.parquet"

    @property
    def stage1_dir(self) -> Path:
        return self.root / "models/stage1"

    @property
    def stage2_dir(self) -> Path:
        return self.root / "models/stage2"

    def resume_dir(self, stage: str) -> Path:
        """Where a training stage keeps its last finished epoch until it completes (not a DVC output, so DVC's
        clean-up before a run leaves it: pipeline/training/resume.py)."""
        return self.root / f"models/.{stage}.resume"

    @property
    def reports_dir(self) -> Path:
        """The training stages' time and peak memory (pipeline/training/report.py): not metrics, never deps."""
        return self.root / "reports"

    def training_report(self, stage: str) -> Path:
        return self.reports_dir / f"{stage}.json"

    @property
    def stage1_live(self) -> Path:
        """DVCLive's curves of stage 1."""
        return self.root / "dvclive/stage1"

    @property
    def stage2_live(self) -> Path:
        return self.root / "dvclive/stage2"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics/eval.json"

    @property
    def eval_context(self) -> Path:
        """Each recall beside its chance level, gallery size and the stage-1 model's (evaluation/context.py)."""
        return self.root / "metrics/eval_context.json"

    @property
    def recall_curve(self) -> Path:
        return self.root / "plots/recall_at_k.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "data/evaluation"

    @property
    def val_rankings(self) -> Path:
        """Every val query's top 10 and its target's rank, as `evaluate` ranked them."""
        return self.evaluation_dir / "rankings.parquet"

    @property
    def gallery_dir(self) -> Path:
        """What the `index` stage keeps between runs: the gallery's captions and features, keyed by content."""
        return self.root / "data/gallery"

    @property
    def gallery_cache(self) -> Path:
        """The gallery's persistent caption and feature cache (not a DVC output: it accumulates across runs)."""
        return self.gallery_dir / "cache.sqlite"

    @property
    def milvus_lite(self) -> Path:
        """The local Milvus Lite file of `index.backend: milvus` when `index.uri` is empty."""
        return self.gallery_dir / "milvus.db"

    @property
    def index_dir(self) -> Path:
        """The gallery's FAISS index (or the manifest of its Milvus collection) and what it holds, for
        `fashion-cir search` and `serve`."""
        return self.root / "index"

    @property
    def retrieval_grid(self) -> Path:
        """A few val queries with their top 5, as a picture (committed for the demo, shown in the README)."""
        return self.root / "plots/retrievals.png"

    @property
    def plots_report(self) -> Path:
        """`fashion-cir plots`: every plot as one self-contained HTML page and a PNG each (not tracked)."""
        return self.root / "plots/report"

    @property
    def submissions(self) -> Path:
        """CIRR's test-server files (FashionIQ: an index saying there is nothing to submit)."""
        return self.root / "submissions"
