"""DVC stage `stage1`: semantic warm-up of both towers on attribute-aware captions (torchrun when
compute.processes > 1)."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.device import run_distributed
from pipeline.errors import run_stage
from pipeline.warmup import stage1


def main() -> None:
    params = stage_params("stage1")
    run_distributed(params.compute, "stages.stage1", lambda runtime: stage1(
        params.model, params.stage1, params.seed, runtime, paths.CAPTIONS, paths.IMAGE_STORE, paths.STAGE1_DIR,
        paths.DVCLIVE_STAGE1))


if __name__ == "__main__":
    run_stage(main)
