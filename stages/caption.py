"""DVC stage `caption`: attribute-aware captions of every image, through the persistent per-image cache
(pipeline/captioning/caption.py)."""

from pipeline.captioning import caption
from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths


def main() -> None:
    report = caption.run(stage_params("caption"), Paths())
    print(f"caption: {report['images']} images, {report.get('cached', 0)} from cache, "
          f"{report.get('captioned', 0)} captioned ({report['captioned_per_second']} img/s), "
          f"{report.get('corrupt', 0)} corrupt, {report.get('failed', 0)} failed")


if __name__ == "__main__":
    run_stage(main)
