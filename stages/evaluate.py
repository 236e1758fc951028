"""DVC stage `evaluate`: FashionIQ-protocol recall of the stage-2 model on the val split."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.evaluation import evaluate_stage


def main() -> None:
    params = stage_params("evaluate")
    summary = evaluate_stage(params.eval, paths.STAGE2_DIR, paths.CAPTIONS,
                             paths.TRIPLETS_DIR, paths.EVAL_METRICS, paths.RECALL_CURVE)
    average = summary["average"]
    print(f"evaluate: R@10 {average['R@10']:.2f}  R@50 {average['R@50']:.2f}  mean {average['mean']:.2f}")


if __name__ == "__main__":
    run_stage(main)
