"""DVC stage `embed`: static features of every image and query text from the frozen stage-1 model."""

from pipeline import paths
from pipeline.config import stage_params
from pipeline.device import Runtime
from pipeline.embedding import embed_stage
from pipeline.errors import run_stage


def main() -> None:
    params = stage_params("embed")
    report = embed_stage(params.embed, Runtime.start(params.compute), paths.STAGE1_DIR, paths.CAPTIONS,
                         paths.IMAGE_STORE, paths.TRIPLETS_DIR, paths.EMBEDDINGS_DIR)
    print(f"embed: {report['images']} images, {report['queries']} queries")


if __name__ == "__main__":
    run_stage(main)
