"""DVC stage `validate`: the dataset read whole, so a wrong data.root or a malformed annotation file stops with one
sentence before any stage works on it (pipeline/data/validate.py)."""

from pipeline.config import stage_params
from pipeline.data import validate
from pipeline.errors import run_stage
from pipeline.paths import Paths


def main() -> None:
    print(validate.summary_line(validate.run(stage_params("validate"), Paths())))


if __name__ == "__main__":
    run_stage(main)
