"""DVC stage `mine`: k FAISS-mined hard negatives per training triplet."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.mining import mine_stage


def main() -> None:
    params = stage_params("mine")
    report = mine_stage(params.negatives, params.seed, paths.EMBEDDINGS_DIR, paths.TRIPLETS_DIR,
                         paths.CAPTIONS, paths.NEGATIVES)
    print(f"mine: {report['triplets']} triplets, {report['mean_negatives']:.1f} negatives each (k={report['k']})")


if __name__ == "__main__":
    run_stage(main)
