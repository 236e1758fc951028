"""DVC stage `caption`: attribute-aware captions of every image, through the persistent per-image cache."""

from pipeline import paths
from pipeline.captioning.run import caption_stage
from pipeline.config import stage_params
from pipeline.errors import run_stage


def main() -> None:
    params = stage_params("caption")
    report = caption_stage(params.data, params.caption, paths.CAPTIONS_DIR)
    print(f"caption: {report['images']} images, {report.get('cached', 0)} from cache, "
          f"{report.get('captioned', 0)} captioned ({report['captioned_per_second']} img/s), "
          f"{report.get('corrupt', 0)} corrupt, {report.get('failed', 0)} failed")


if __name__ == "__main__":
    run_stage(main)
