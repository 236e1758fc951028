"""DVC stage `triplets`: annotated and generated triplets as Parquet tables (pipeline/triplets/triplets.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths
from pipeline.triplets import triplets


def main() -> None:
    report = triplets.run(stage_params("triplets"), Paths())
    print(f"triplets: {report['train_annotated']} annotated + {report['train_generated']} generated train, "
          f"{report['val']} val")


if __name__ == "__main__":
    run_stage(main)
