"""DVC stage `stage2`: composed-retrieval training with coarse, hard and static negatives (torchrun when
compute.processes > 1)."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.device import run_distributed
from pipeline.errors import run_stage
from pipeline.retrieval import stage2


def main() -> None:
    params = stage_params("stage2")
    run_distributed(params.compute, "stages.stage2", lambda runtime: stage2(
        params.stage2, params.negatives, params.seed, runtime, params.data.source, paths.STAGE1_DIR,
        paths.EMBEDDINGS_DIR, paths.TRIPLETS_DIR, paths.CAPTIONS, paths.NEGATIVES, paths.STAGE2_DIR,
        paths.DVCLIVE_STAGE2))


if __name__ == "__main__":
    run_stage(main)
