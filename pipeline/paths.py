"""Where each stage writes; dvc.yaml declares the same paths (tests/test_dag.py checks they agree)."""

from pathlib import Path

SYNTHETIC = Path("data/synthetic")
CAPTIONS_DIR = Path("data/captions")
CAPTIONS = CAPTIONS_DIR / "captions.parquet"
TRIPLETS_DIR = Path("data/triplets")
IMAGE_STORE = Path("data/image_store")
EMBEDDINGS_DIR = Path("data/embeddings")
NEGATIVES = Path("data/negatives/train.parquet")
STAGE1_DIR = Path("models/stage1")
STAGE2_DIR = Path("models/stage2")
DVCLIVE_STAGE1 = Path("dvclive/stage1")
DVCLIVE_STAGE2 = Path("dvclive/stage2")
EVAL_METRICS = Path("metrics/eval.json")
RECALL_CURVE = Path("plots/recall_at_k.json")
SUBMISSIONS = Path("submissions")
