"""DVC stage `evaluate`: recall of the stage-2 model on the val split, by the benchmark's protocol, beside its
chance level and the stage-1 model's (pipeline/evaluation/evaluate.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.evaluation import evaluate
from pipeline.evaluation.context import context_line
from pipeline.paths import Paths


def main() -> None:
    params = stage_params("evaluate")
    print(context_line(params.data.source, evaluate.run(params, Paths())))


if __name__ == "__main__":
    run_stage(main)
