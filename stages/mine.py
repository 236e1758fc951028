"""DVC stage `mine`: k FAISS-mined hard negatives per training triplet (pipeline/negatives/mine.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.negatives import mine
from pipeline.paths import Paths


def main() -> None:
    report = mine.run(stage_params("mine"), Paths())
    print(f"mine: {report['triplets']} triplets, {report['mean_negatives']:.1f} negatives each (k={report['k']})")


if __name__ == "__main__":
    run_stage(main)
