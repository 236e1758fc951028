"""DVC stage `embed`: static features of every image and query text from the frozen stage-1 model
(pipeline/features/embed.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.features import embed
from pipeline.paths import Paths


def main() -> None:
    report = embed.run(stage_params("embed"), Paths())
    print(f"embed: {report['images']} images, {report['queries']} queries")


if __name__ == "__main__":
    run_stage(main)
