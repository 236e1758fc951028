"""The serving state, stored once on `app.state` by create_app, and the dependencies that hand it to the routes.

The engine is looked up per request (`EngineDep`): a LiveEngine swaps in a new index version between requests. A
search is answered by the batcher, which takes the engine once per batch, so no answer mixes two versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from pipeline.paths import Paths
from pipeline.search.api.rankings import Rankings
from pipeline.search.batching import QueryBatcher
from pipeline.search.engine import SearchEngine
from pipeline.search.live import LiveEngine
from pipeline.search.monitoring import ServiceMetrics


@dataclass(frozen=True)
class Serving:
    """What the routes answer from."""

    paths: Paths
    live: LiveEngine
    batcher: QueryBatcher
    metrics: ServiceMetrics | None  # None: started with --no-metrics
    rankings: Rankings
    draining: Callable[[], bool]  # the server is stopping: /ready answers 503


async def serving(request: Request) -> Serving:
    return request.app.state.serving


async def current_engine(state: Annotated[Serving, Depends(serving)]) -> SearchEngine:
    """The engine serving now (the same one for the whole request)."""
    return state.live.current


ServingDep = Annotated[Serving, Depends(serving)]
EngineDep = Annotated[SearchEngine, Depends(current_engine)]
