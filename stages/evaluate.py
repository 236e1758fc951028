"""DVC stage `evaluate`: recall of the stage-2 model on the val split, by the benchmark's protocol
(pipeline/evaluation/evaluate.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.evaluation import evaluate
from pipeline.paths import Paths


def main() -> None:
    summary = evaluate.run(stage_params("evaluate"), Paths())
    headline = summary.get("average", summary)
    print("evaluate: " + "  ".join(f"{name} {value:.2f}" for name, value in headline.items()))


if __name__ == "__main__":
    run_stage(main)
