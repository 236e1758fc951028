"""The captioner `caption.backend` names (each behind the interface of pipeline/captioning/base.py)."""

from __future__ import annotations

from pathlib import Path

from pipeline.captioning.base import Captioner
from pipeline.captioning.catalog import CatalogCaptioner
from pipeline.config import CaptionParams


def build_captioner(params: CaptionParams, log_dir: Path | None = None) -> Captioner:
    """The backend `caption.backend` names. MLLM backends load lazily: nothing starts until an image needs it."""
    if params.backend == "catalog":
        return CatalogCaptioner()
    if params.backend == "vllm":
        from pipeline.captioning.vllm_client import VLLMServerCaptioner
        return VLLMServerCaptioner(params, log_path=log_dir / "vllm-server.log" if log_dir else None)
    if params.backend == "vllm-offline":
        from pipeline.captioning.vllm_offline import VLLMOfflineCaptioner
        return VLLMOfflineCaptioner(params)
    if params.backend == "transformers":
        from pipeline.captioning.hf import TransformersCaptioner
        return TransformersCaptioner(params)
    raise AssertionError(f"unvalidated caption backend {params.backend!r}")  # config restricts the choices
