"""DVC stage `triplets`: annotated and generated triplets as Parquet tables."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.triplets import triplets_stage


def main() -> None:
    params = stage_params("triplets")
    report = triplets_stage(params.data, params.triplets, params.seed, paths.CAPTIONS, paths.TRIPLETS_DIR,
                            caption=params.caption)
    print(f"triplets: {report['train_annotated']} annotated + {report['train_generated']} generated train, "
          f"{report['val']} val")


if __name__ == "__main__":
    run_stage(main)
