"""What operators and load balancers ask: liveness (/health), readiness (/ready) and Prometheus metrics (/metrics)."""

from __future__ import annotations

from datetime import datetime, timezone

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from pipeline.search.api.answers import Batching, Health, Ready
from pipeline.search.api.deps import EngineDep, ServingDep
from pipeline.search.api.errors import ANY_FAILURE, ApiError, said
from pipeline.search.api.search_body import MAX_UPLOAD_BYTES
from pipeline.search.engine import MAX_PIXELS

router = APIRouter(responses=ANY_FAILURE)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


@router.get("/health")
def health(state: ServingDep, engine: EngineDep) -> Health:
    """Liveness: the index version served and since when, the gallery's size, how much batching happened."""
    batcher = state.batcher
    return Health(status="ok", version=engine.version, serving_since=iso(state.live.since), swaps=state.live.swaps,
                  images=len(engine.gallery), rankings=state.paths.val_rankings.is_file(),
                  max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS,
                  batches=Batching(answered=batcher.batches, queries=batcher.queries, largest=batcher.largest))


@router.get("/ready", responses={503: said("the server is stopping")})
def ready(state: ServingDep, engine: EngineDep) -> Ready:
    """Whether to send this server queries: its model and index are loaded and it is not stopping."""
    if state.draining():
        raise ApiError(503, "the server is stopping; it answers the requests in flight, no new ones.")
    return Ready(ready=True, version=engine.version)


@router.get("/metrics", include_in_schema=False)
def scrape(state: ServingDep) -> Response:
    if state.metrics is None:
        raise ApiError(404, "metrics are off on this server (it was started with --no-metrics).")
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
