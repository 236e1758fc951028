"""DVC stage `stage2`: composed-retrieval training with coarse, hard and static negatives
(pipeline/training/stage2.py; under torchrun when compute.processes > 1)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths
from pipeline.training import stage2


def main() -> None:
    stage2.run(stage_params("stage2"), Paths())


if __name__ == "__main__":
    run_stage(main)
