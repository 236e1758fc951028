"""`fashion-cir serve`: a small web app over the trained model, for a person to try queries and to see where the
model fails, and a typed JSON API for a shop's backend (its OpenAPI schema at /openapi.json).

One static page (static/index.html, app.js, style.css; no CDN, works offline) calls the JSON API:

    GET  /                    the page: Search | Validation queries | (a slot for training plots)
    POST /api/search          a query: JSON (SearchRequest) or a multipart form with the same fields plus an upload
                              `image`; composed (reference + text), text only, or image only; filters in `where`
    GET  /api/filters         what can be filtered on: the category and a catalogue's columns, with their values
    GET  /api/gallery         the gallery, filtered (category, q: a substring of name or caption, or a file name or
                              path the image is known by) and paged
    GET  /api/queries         the val queries as `evaluate` ranked them (Paths.val_rankings), failures first
    GET  /api/recall          each val recall in context: gallery size, chance level, the stage-1 model's recall
    GET  /images/{name}       a gallery image's file, looked up by name only (never a path built from the request)
    GET  /static/...          the page's code (Starlette's StaticFiles)
    GET  /training/           the training plots, offline (`fashion-cir plots`, rendered when the server starts)
    GET  /health              liveness: the index version served and since when, gallery size, batching so far
    GET  /ready               200 while the model and index are loaded and the server takes requests; 503 draining
    GET  /metrics             Prometheus metrics (pipeline/search/monitoring.py), unless started with --no-metrics
    GET  /openapi.json        the API's schema

The routes live in pipeline/search/api/ (one router per concern, the serving state injected by deps.py); this
module builds the app around them and runs it.

The server follows its index (pipeline/search/live.py): a new version written by the `index` stage is loaded beside
the served one and swapped in, no restart. Beyond loopback it needs an API key (pipeline/search/guard.py). SIGTERM
stops it gracefully: it stops listening, answers the requests in flight (up to GRACE_SECONDS), then exits. Each
request is one access-log line.

Concurrent searches are answered together in batches (pipeline/search/batching.py). A bad request gets a 4xx answer
with {"error": "<one sentence>"} and the server carries on. Uploads stop with 413 as soon as the body passes
MAX_UPLOAD_BYTES (api/search_body.py), without reading the rest; an image whose header declares more than the
engine's MAX_PIXELS pixels is refused before it is decoded, and k is at most the engine's MAX_K.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI

from pipeline.errors import PipelineError
from pipeline.evaluation.plots import render_plots
from pipeline.paths import Paths
from pipeline.search.api import browse, page, probes, search
from pipeline.search.api.deps import Serving
from pipeline.search.api.errors import install_error_handlers
from pipeline.search.api.rankings import Rankings
from pipeline.search.batching import MAX_BATCH, QueryBatcher
from pipeline.search.engine import SearchEngine
from pipeline.search.guard import ApiKeyGuard, api_key
from pipeline.search.live import POLL_SECONDS, LiveEngine
from pipeline.search.monitoring import AccessLog, ServiceMetrics

GRACE_SECONDS = 30  # after SIGTERM, how long requests in flight may take to finish


def create_app(paths: Paths, engine: SearchEngine | LiveEngine, max_batch: int = MAX_BATCH, metrics: bool = True,
               key: str | None = None, draining: Callable[[], bool] = lambda: False) -> FastAPI:
    """The app over an opened engine (a LiveEngine that follows the index, or a fixed SearchEngine); tests build
    it directly, `serve` runs it under uvicorn. `max_batch` bounds how many concurrent queries are answered together
    (1: one at a time); `metrics` serves /metrics; `key`, when given, is required (pipeline/search/guard.py);
    `draining` says the server is stopping (/ready answers 503)."""
    app = FastAPI(title="fashion-cir", description=__doc__.split("\n\n")[0], docs_url=None, redoc_url=None)
    live = engine if isinstance(engine, LiveEngine) else LiveEngine(paths, engine)
    service = ServiceMetrics() if metrics else None
    if service is not None:
        service.serving(live.current)
        live.on_swap = lambda swapped: service.serving(swapped, swapped=True)
    batcher = QueryBatcher(lambda: live.current, max_batch, service.batch_answered if service else None)
    app.state.serving = Serving(paths, live, batcher, service, Rankings(paths.val_rankings), draining)
    for routes in (page.router, probes.router, search.router, browse.router):
        app.include_router(routes)
    page.mount_files(app, paths)
    install_error_handlers(app)
    app.add_middleware(AccessLog, metrics=service)
    if key is not None:
        app.add_middleware(ApiKeyGuard, key=key)  # added last: runs first, before anything is logged as answered
    return app


def serve(paths: Paths, host: str = "127.0.0.1", port: int = 8000, checkpoint: Path | None = None,
          max_batch: int = MAX_BATCH, metrics: bool = True, follow_seconds: float = POLL_SECONDS) -> None:
    """Check the key and open the index and model once (a bad setup is one sentence before any socket opens), then
    serve, following the index every `follow_seconds` (0: never), until SIGTERM or Ctrl-C."""
    import uvicorn

    key = api_key(host)
    engine = SearchEngine.open(paths, checkpoint)
    try:
        render_plots(paths.root, paths.plots_report, [])
    except PipelineError as error:  # the page works without its training plots
        print(f"fashion-cir: no training plots ({error})", flush=True)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger = logging.getLogger("fashion_cir")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    live, stopping = LiveEngine(paths, engine, checkpoint), []
    app = create_app(paths, live, max_batch, metrics, key, draining=lambda: bool(stopping and stopping[0].should_exit))
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False,
                                           timeout_graceful_shutdown=GRACE_SECONDS))
    stopping.append(server)
    if follow_seconds > 0:
        live.follow(follow_seconds)
    print(f"fashion-cir: {len(engine.gallery)} gallery images, index version {engine.version or '(none)'}; open "
          f"http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.run()
    finally:
        live.stop()
