"""DVC stage `synthesize`: render the demo catalogue in FashionIQ's layout."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.data.synthetic.catalogue import write_catalogue
from pipeline.errors import run_stage


def main() -> None:
    params = stage_params("synthesize")
    counts = write_catalogue(paths.SYNTHETIC, params.synthetic, params.seed)
    print(f"synthesize: {counts['images']} images, {counts['pairs']} annotated pairs in {paths.SYNTHETIC}")


if __name__ == "__main__":
    run_stage(main)
