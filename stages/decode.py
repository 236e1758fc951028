"""DVC stage `decode`: every image decoded once into the image store the training and embedding stages read
(pipeline/data/decode.py)."""

from pipeline.config import stage_params
from pipeline.data import decode
from pipeline.errors import run_stage
from pipeline.paths import Paths


def main() -> None:
    report = decode.run(stage_params("decode"), Paths())
    resumed = (f", resumed after {report['resumed_from']} ({report['decoded_again']} changed or failed before, decoded "
               f"again)" if report["resumed_from"] else "")
    print(f"decode: {report['images']} images, {report['undecodable_images']} undecodable, {report['format']} "
          f"({report['bytes'] / 2**20:.1f} MiB){resumed}")


if __name__ == "__main__":
    run_stage(main)
