"""POST /api/search: a query (composed, text only or image only) in, the k nearest gallery images out, answered
through the batcher together with the queries that arrive meanwhile (pipeline/search/batching.py)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request

from pipeline.search.api.answers import SearchAnswer
from pipeline.search.api.deps import EngineDep, ServingDep
from pipeline.search.api.errors import ANY_FAILURE, BAD_REQUEST, said
from pipeline.search.api.search_body import read_query, search_body_schema

router = APIRouter(responses={**BAD_REQUEST, **ANY_FAILURE})


@router.post("/api/search", responses={413: said("the upload is too large")}, openapi_extra=search_body_schema())
async def search(request: Request, state: ServingDep, engine: EngineDep) -> SearchAnswer:
    """The k gallery images nearest a query (composed, text only or image only), within its filters."""
    started = time.perf_counter()
    query = await read_query(request, engine)  # the engine resolves a reference's name; the batch answers it
    if state.metrics is not None:
        state.metrics.phases.labels("parse").observe(time.perf_counter() - started)
    answer = await asyncio.wrap_future(state.batcher.submit(query))
    request.state.kind = answer.kind  # the access log's and the metrics' query kind
    return SearchAnswer.of(answer, query.k)
