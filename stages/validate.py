"""DVC stage `validate`: the dataset read whole, so a wrong data.root or a malformed annotation file stops with one
sentence before any stage works on it (pipeline/data/validate.py)."""

from pipeline.config import stage_params
from pipeline.data import validate
from pipeline.errors import run_stage
from pipeline.paths import Paths


def main() -> None:
    summary = validate.run(stage_params("validate"), Paths())
    counts = [f"{split} {n} images / {summary['pairs'][split]} pairs" for split, n in summary["images"].items()]
    print(f"validate: {summary['source']} at {summary['root']}: " + ", ".join(counts))


if __name__ == "__main__":
    run_stage(main)
