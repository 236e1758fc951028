"""DVC stage `decode`: every image decoded once into the image store the training and embedding stages read."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.data.store import decode_stage
from pipeline.errors import run_stage


def main() -> None:
    params = stage_params("decode")
    report = decode_stage(params.data, params.model, params.compute.workers, paths.IMAGE_STORE)
    print(f"decode: {report['images']} images, {report['undecodable_images']} undecodable"
          + (f", resumed after {report['resumed_from']}" if report["resumed_from"] else ""))


if __name__ == "__main__":
    run_stage(main)
