"""FashionIQ-protocol evaluation: each val pair's composed query against its category's val image split.

As in CLIP4Cir's validation: the gallery is the category's val split with the reference NOT removed, the query text
is the validation-form join of the two relative captions (plus the reference prompt when triplets.reference_prompt
is on), and recall is reported in percent. `eval.query` gives the single-modality ablations: `image` ranks by the
reference image alone, `text` by the relative captions alone (without the reference prompt, which is itself
derived from the reference image).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from pipeline.config import EvalParams
from pipeline.data.images import decode_images
from pipeline.features import image_features, text_features
from pipeline.io import write_json
from pipeline.metrics import fashioniq_summary, recall_at_k, target_ranks
from pipeline.models import QueryMode, RetrievalModel, image_loader, load_checkpoint, tokenizer_for
from pipeline.triplets import relative_text


@dataclass
class ValidationSet:
    """The val gallery (row i of `gallery` is row i of the features passed to `recalls`) and its triplets."""

    gallery: pd.DataFrame  # name, category
    triplets: pd.DataFrame

    @classmethod
    def build(cls, gallery: pd.DataFrame, triplets_path: Path) -> ValidationSet:
        """Keep the val triplets whose reference and target are both in `gallery` (decodable images)."""
        gallery = gallery[["name", "category"]].reset_index(drop=True)
        triplets = pd.read_parquet(triplets_path)
        names = set(gallery["name"])
        triplets = triplets[triplets["candidate"].isin(names) & triplets["target"].isin(names)]
        return cls(gallery, triplets.reset_index(drop=True))

    def query_texts(self, mode: QueryMode) -> list[str]:
        if mode == "text":
            return [relative_text(a, b) for a, b in zip(self.triplets["caption1"], self.triplets["caption2"],
                                                        strict=True)]
        return self.triplets["query_text"].tolist()

    def recalls(self, model: RetrievalModel, tokenizer, gallery_features: torch.Tensor, mode: QueryMode,
                ks: list[int], batch_size: int) -> dict[str, dict[int, float]]:
        """Recall@k per category, for `gallery_features` computed by `model`'s image tower."""
        row = dict(zip(self.gallery["name"], range(len(self.gallery)), strict=True))
        texts = text_features(model, tokenizer, self.query_texts(mode), batch_size, desc="queries")
        results: dict[str, dict[int, float]] = {}
        for category in dict.fromkeys(self.triplets["category"]):
            in_category = torch.from_numpy((self.triplets["category"] == category).to_numpy(copy=True))
            triplets = self.triplets[in_category.numpy()]
            gallery_rows = torch.from_numpy((self.gallery["category"] == category).to_numpy(copy=True))
            gallery_rows = torch.nonzero(gallery_rows).squeeze(1)
            position = torch.full((len(self.gallery),), -1, dtype=torch.long)
            position[gallery_rows] = torch.arange(len(gallery_rows))
            reference = gallery_features[torch.tensor(triplets["candidate"].map(row).to_numpy())]
            with torch.no_grad():
                query = model.compose(reference, texts[in_category], mode)
            scores = query @ gallery_features[gallery_rows].T
            target = position[torch.tensor(triplets["target"].map(row).to_numpy())]
            results[category] = recall_at_k(target_ranks(scores, target), ks)
        return results


def evaluate_stage(params: EvalParams, checkpoint_dir: Path, captions_path: Path, triplets_dir: Path,
                   metrics_path: Path, curve_path: Path) -> dict[str, dict[str, float]]:
    model = load_checkpoint(checkpoint_dir).eval()
    captions = pd.read_parquet(captions_path)
    gallery = captions[captions["split"] == "val"].reset_index(drop=True)
    pixels, failed = decode_images(gallery["path"].tolist(), image_loader(model), desc="decode val")
    gallery = gallery.drop(index=gallery.index[failed])
    validation = ValidationSet.build(gallery, triplets_dir / "val.parquet")
    features = image_features(model, pixels, params.batch_size, desc="embed val gallery")
    ks = sorted(set(params.recall_ks) | {10, 50})
    recalls = validation.recalls(model, tokenizer_for(model.arch), features, params.query, ks, params.batch_size)
    summary = fashioniq_summary(recalls)
    write_json(metrics_path, summary)
    curve = [{"k": k, **{c: round(r[k], 4) for c, r in recalls.items()},
              "average": round(sum(r[k] for r in recalls.values()) / len(recalls), 4)} for k in ks]
    write_json(curve_path, curve)
    return summary
