"""DVC stage `index`: the gallery's features from the trained model in a FAISS index, for `fashion-cir search` and
`fashion-cir serve` (pipeline/search/index.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths
from pipeline.search import index


def main() -> None:
    report = index.run(stage_params("index"), Paths())
    print(f"index: {report['images']} images in a {report['kind']} index, {report['undecodable_images']} undecodable")


if __name__ == "__main__":
    run_stage(main)
