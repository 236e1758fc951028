"""DVC stage `index`: the gallery's features from the trained model in a vector index (FAISS or Milvus), for
`fashion-cir search` and `fashion-cir serve` (pipeline/search/index.py)."""

from pipeline.config import stage_params
from pipeline.errors import run_stage
from pipeline.paths import Paths
from pipeline.search import index


def main() -> None:
    params = stage_params("index")
    report = index.run(params, Paths())
    where = "a Milvus collection" if report["backend"] == "milvus" else "a FAISS index"
    line = (f"index: {report['images']} images of {params.gallery.root} in {where} ({report['kind']}); "
            f"{report['encoded']} encoded, {report['features_cached']} from the cache, "
            f"{report['undecodable_images']} undecodable")
    if "upserted" in report:
        line += f"; {report['upserted']} upserted, {report['deleted']} deleted"
    if "captioned" in report:
        line += f"; {report['captioned']} captioned, {report['captions_cached']} captions from the cache"
    print(f"{line}; version {report['version']}")


if __name__ == "__main__":
    run_stage(main)
