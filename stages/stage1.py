"""DVC stage `stage1`: semantic warm-up of both towers on attribute-aware captions."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.warmup import stage1


def main() -> None:
    params = stage_params("stage1")
    stage1(params.model, params.stage1, params.seed, paths.CAPTIONS, paths.STAGE1_DIR, paths.DVCLIVE_STAGE1)


if __name__ == "__main__":
    run_stage(main)
