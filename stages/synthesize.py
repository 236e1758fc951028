"""DVC stage `synthesize`: render the demo catalogue in FashionIQ's layout (pipeline/data/synthetic/synthesize.py)."""

from pipeline.config import stage_params
from pipeline.data.synthetic import synthesize
from pipeline.errors import run_stage
from pipeline.paths import Paths


def main() -> None:
    paths = Paths()
    counts = synthesize.run(stage_params("synthesize"), paths)
    print(f"synthesize: {counts['images']} images, {counts['pairs']} annotated pairs in {paths.synthetic}")


if __name__ == "__main__":
    run_stage(main)
