"""DVC stage `stage1`: semantic warm-up of both towers on attribute-aware captions (pipeline/training/stage1.py;
under torchrun when compute.processes > 1)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths
from pipeline.training import stage1


def main() -> None:
    stage1.run(stage_params("stage1"), Paths())


if __name__ == "__main__":
    run_stage(main)
