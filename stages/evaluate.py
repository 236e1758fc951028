"""DVC stage `evaluate`: recall of the stage-2 model on the val split, by the benchmark's protocol."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.device import Runtime
from pipeline.errors import run_stage
from pipeline.evaluation import evaluate_stage


def main() -> None:
    params = stage_params("evaluate")
    summary = evaluate_stage(params.eval, params.data.source, Runtime.start(params.compute), paths.STAGE2_DIR,
                             paths.CAPTIONS, paths.IMAGE_STORE, paths.TRIPLETS_DIR, paths.EVAL_METRICS,
                             paths.RECALL_CURVE, paths.SUBMISSIONS)
    headline = summary.get("average", summary)
    print("evaluate: " + "  ".join(f"{name} {value:.2f}" for name, value in headline.items()))


if __name__ == "__main__":
    run_stage(main)
