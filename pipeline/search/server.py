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

The server follows its index (pipeline/search/live.py): a new version written by the `index` stage is loaded beside
the served one and swapped in, no restart. Beyond loopback it needs an API key (pipeline/search/guard.py). SIGTERM
stops it gracefully: it stops listening, answers the requests in flight (up to GRACE_SECONDS), then exits. Each
request is one access-log line.

Concurrent searches are answered together in batches (pipeline/search/batching.py). A bad request gets a 4xx answer
with {"error": "<one sentence>"} and the server carries on. Uploads stop with 413 as soon as the body passes
MAX_UPLOAD_BYTES, without reading the rest; an image whose header declares more than MAX_PIXELS pixels is refused
before it is decoded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import FastAPI, Request
from fastapi import Query as QueryParameter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope

from pipeline.errors import PipelineError
from pipeline.evaluation.context import SMALL_CHANCE_R10
from pipeline.evaluation.plots import render_plots
from pipeline.paths import Paths
from pipeline.search.batching import MAX_BATCH, QueryBatcher
from pipeline.search.engine import MAX_PIXELS, Answer, Query, SearchEngine
from pipeline.search.guard import ApiKeyGuard, api_key
from pipeline.search.live import POLL_SECONDS, LiveEngine
from pipeline.search.monitoring import AccessLog, ServiceMetrics

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024   # multipart boundaries, headers and the text fields around the image
MAX_K = 100
TOP = 10
GRACE_SECONDS = 30  # after SIGTERM, how long requests in flight may take to finish
STATIC = Path(__file__).parent / "static"
CACHE = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}  # gallery images
FRESH = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}  # the page's code: revalidated


class ApiError(Exception):
    """A bad request, answered with its status and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class PageFiles(StaticFiles):
    """Starlette's StaticFiles, with the headers of the page's own code: revalidated on every load (a new version
    shows at once) and never type-sniffed."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(FRESH)
        return response


class TrainingPlots(PageFiles):
    """The offline plots page (`fashion-cir plots`), a folder that may be written after the server starts."""

    async def check_config(self) -> None:
        """StaticFiles checks once that its folder exists; this one is checked on each request instead."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not Path(str(self.directory)).is_dir():
            raise ApiError(404, "no training plots here; run `fashion-cir plots` (after `dvc repro`).")
        return await super().get_response(path, scope)


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def sentence(text: str) -> str:
    """One sentence ending in a full stop, whatever the framework's message looked like."""
    text = str(text).strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def too_large() -> ApiError:
    return ApiError(413, f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; send a smaller image.")


def capped_receive(receive: Receive, limit: int) -> Receive:
    """`receive` that raises 413 once the body passes `limit` bytes, so an oversized upload is never read whole."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise too_large()
        return message

    return counted


async def read_form(request: Request) -> FormData:
    """The search form, its size capped while reading (a declared Content-Length over the cap is refused first)."""
    limit = MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    capped = Request(request.scope, receive=capped_receive(request.receive, limit))
    return await capped.form(max_files=1, max_fields=8)


SCORE = ("cosine similarity of the query's feature and the image's (both of unit length), from -1 to 1, higher is "
         "closer. It ranks the images of one query; it is not a probability, and a threshold does not mean the "
         "same across models, query kinds (composed, text, image) or categories.")


class SearchRequest(BaseModel):
    """A query: `reference` and `text` (composed), `text` alone, or `reference` alone (with the multipart form, an
    uploaded `image` can stand for `reference`)."""

    text: str = Field("", max_length=1000, description="the modification text (with a reference), or the whole query")
    reference: str = Field("", max_length=500, description="a gallery image's name")
    k: int = Field(TOP, ge=1, le=MAX_K, description="how many results")
    where: list[str] = Field([], max_length=16, description="filters that must all hold: 'colour = red', "
                                                            "'gender in (women, girls)', 'price <= 40'")
    every_category: bool = Field(False, description="search every category; by default a query with a gallery "
                                                    "reference searches the reference's category")


class SearchForm(SearchRequest):
    """The multipart form: SearchRequest's fields (`where` repeated) and an optional upload."""

    image: bytes | None = Field(None, json_schema_extra={"format": "binary"},
                                description=f"an image file to use as the reference (at most "
                                            f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MB and "
                                            f"{MAX_PIXELS // 1_000_000} million pixels)")


class SearchHit(BaseModel):
    rank: int
    name: str
    category: str
    score: float = Field(description=SCORE)


class SearchAnswer(BaseModel):
    kind: Literal["composed", "text", "image"]
    reference: str = Field(description="the gallery name, or 'upload'; '' for a text query")
    text: str
    query_text: str = Field(description="what the text tower read (the text, after the reference's caption where "
                                        "the model was trained so)")
    filters: list[str] = Field(description="every filter applied, the reference's category included")
    k: int
    milliseconds: float = Field(description="time to answer the batch this query was answered in")
    version: str = Field(description="the index version that answered (every hit is from it)")
    hits: list[SearchHit]

    @classmethod
    def of(cls, answer: Answer, k: int) -> SearchAnswer:
        hits = [SearchHit(rank=h.rank, name=h.name, category=h.category, score=h.score) for h in answer.hits]
        return cls(kind=answer.kind, reference=answer.reference, text=answer.text, query_text=answer.query_text,
                   filters=answer.filters, k=k, milliseconds=round(answer.milliseconds, 1), version=answer.version,
                   hits=hits)


class ErrorAnswer(BaseModel):
    error: str = Field(description="one sentence saying what was wrong with the request")


ERRORS = {status: {"model": ErrorAnswer} for status in (400, 401, 413)}
TRUE = {"true", "1", "on", "yes"}


def search_body_schema() -> dict[str, Any]:
    """The request body's schema for OpenAPI: JSON or the multipart form (the endpoint parses it itself, to cap an
    upload's size while reading it)."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": SearchRequest.model_json_schema()},
        "multipart/form-data": {"schema": SearchForm.model_json_schema()}}}}


async def read_query(request: Request, engine: SearchEngine) -> Query:
    """The query of a JSON body or of a multipart form (whose upload, if any, is the reference)."""
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            asked = SearchRequest.model_validate_json(await request.body())
        except ValidationError as error:
            first = error.errors()[0]
            raise ApiError(400, sentence(f"{'.'.join(map(str, first['loc'])) or 'body'}: {first['msg']}")) from None
        return Query(gallery_reference(asked.reference, engine), asked.text, asked.k, tuple(asked.where),
                     asked.every_category)
    form = await read_form(request)
    try:
        fields = {key: form.get(key) for key in ("text", "reference", "k", "every_category")}
        if any(not isinstance(v, str) for v in fields.values() if v is not None):
            raise ApiError(400, "text, reference, k and every_category are text fields, not files.")
        where = [w for w in form.getlist("where") if isinstance(w, str) and w.strip()]
        try:
            asked = SearchRequest(text=fields["text"] or "", reference=fields["reference"] or "",
                                  k=parse_k(fields["k"]), where=where,
                                  every_category=(fields["every_category"] or "").lower() in TRUE)
        except ValidationError as error:
            first = error.errors()[0]
            raise ApiError(400, sentence(f"{first['loc'][0]}: {first['msg']}")) from None
        image = await uploaded(form)
    finally:
        await form.close()  # an upload's spooled temporary file
    if image is not None and asked.reference:
        raise ApiError(400, "give one reference: a gallery image's name (reference) or a file (image), not both.")
    reference = image if image is not None else gallery_reference(asked.reference, engine)
    return Query(reference, asked.text, asked.k, tuple(asked.where), asked.every_category)


def parse_k(value: Any) -> int:
    """k from the form: a whole number in 1..MAX_K, 10 when absent."""
    if value in (None, ""):
        return TOP
    if not isinstance(value, str) or not value.strip().isdigit() or not 1 <= int(value) <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}, not {str(value)[:20]!r}.")
    return int(value)


async def uploaded(form: FormData) -> bytes | None:
    """The uploaded file's bytes, None without one."""
    upload = form.get("image")
    if not (isinstance(upload, UploadFile) and bool(upload.filename or upload.size)):
        return None
    if (upload.size or 0) > MAX_UPLOAD_BYTES:  # the body cap above allows for the form around the file
        raise too_large()
    return await upload.read()


def gallery_reference(name: str, engine: SearchEngine) -> str | None:
    """A reference by a name the shop knows (pipeline/search/names.py): a gallery image's name, never a file the
    client chose; None for no reference."""
    if not name:
        return None
    found = engine.resolve(name, files=False)
    if found is None:
        raise ApiError(400, f"no gallery image is named {name[:80]!r}.")
    return found


class Rankings:
    """The val rankings file, re-read when `evaluate` rewrites it, sorted failures first (worst rank first)."""

    def __init__(self, path: Path):
        self.path, self.stamp, self.table = path, None, pd.DataFrame()

    def load(self) -> pd.DataFrame | None:
        """The sorted table, or None while the file does not exist."""
        if not self.path.is_file():
            return None
        stat = self.path.stat()
        if self.stamp != (stat.st_mtime_ns, stat.st_size):
            table = pd.read_parquet(self.path)
            severity = table["target_rank"].where(table["target_rank"] > 0, 1 << 30)  # 0: not rankable, worst
            table = table.assign(severity=severity).sort_values(["severity", "triplet_id"], ascending=[False, True])
            self.table, self.stamp = table.reset_index(drop=True), (stat.st_mtime_ns, stat.st_size)
        return self.table


def query_item(row: Any, engine: SearchEngine) -> dict[str, Any]:
    """One val query as the page draws it: its texts, rank, and top 10 with categories."""
    category_of = engine.gallery["category"]
    top = [{"name": str(name), "score": float(score),
            "category": str(category_of.iat[engine.row_of[name]]) if name in engine.row_of else ""}
           for name, score in zip(row.top, row.scores, strict=True)]
    return {"triplet_id": str(row.triplet_id), "category": str(row.category), "source": str(row.source),
            "reference": str(row.reference), "target": str(row.target), "caption1": str(row.caption1),
            "caption2": str(row.caption2), "query_text": str(row.query_text), "target_rank": int(row.target_rank),
            "hit": 1 <= int(row.target_rank) <= TOP, "top": top}


def install_error_handlers(app: FastAPI) -> None:
    """Every error, the framework's too, as {"error": one sentence}; a bug is a 500 sentence, never a traceback."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.message)

    @app.exception_handler(PipelineError)
    async def pipeline_error(_: Request, error: PipelineError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        message = "no such page or image" if error.status_code == 404 else error.detail
        return error_response(error.status_code, sentence(message))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        return error_response(400, sentence(f"{first['loc'][-1]}: {first['msg']}"))

    @app.exception_handler(Exception)
    async def bug(_: Request, error: Exception) -> JSONResponse:  # uvicorn still logs the traceback
        return error_response(500, "the server failed on this request; its log says why.")


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def create_app(paths: Paths, engine: SearchEngine | LiveEngine, max_batch: int = MAX_BATCH, metrics: bool = True,
               key: str | None = None, draining: Callable[[], bool] = lambda: False) -> FastAPI:
    """The app over an opened engine (a LiveEngine that follows the index, or a fixed SearchEngine); tests build
    it directly, `serve` runs it under uvicorn. `max_batch` bounds how many concurrent queries are answered together
    (1: one at a time); `metrics` serves /metrics; `key`, when given, is required (pipeline/search/guard.py);
    `draining` says the server is stopping (/ready answers 503)."""
    app = FastAPI(title="fashion-cir", description=__doc__.split("\n\n")[0], docs_url=None, redoc_url=None)
    install_error_handlers(app)
    live = engine if isinstance(engine, LiveEngine) else LiveEngine(paths, engine)
    service = ServiceMetrics() if metrics else None
    if service is not None:
        service.serving(live.current)
        live.on_swap = lambda swapped: service.serving(swapped, swapped=True)
    rankings = Rankings(paths.val_rankings)
    batcher = QueryBatcher(lambda: live.current, max_batch, service.batch_answered if service else None)
    app.add_middleware(AccessLog, metrics=service)
    if key is not None:
        app.add_middleware(ApiKeyGuard, key=key)  # added last: runs first, before anything is logged as answered

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/health")
    def health() -> dict[str, Any]:
        engine = live.current
        return {"status": "ok", "version": engine.version, "serving_since": iso(live.since), "swaps": live.swaps,
                "images": len(engine.gallery), "rankings": paths.val_rankings.is_file(),
                "max_upload_bytes": MAX_UPLOAD_BYTES, "max_pixels": MAX_PIXELS,
                "batches": {"answered": batcher.batches, "queries": batcher.queries, "largest": batcher.largest}}

    @app.get("/ready", responses={503: {"model": ErrorAnswer}})
    def ready() -> Any:
        """Whether to send this server queries: its model and index are loaded and it is not stopping."""
        if draining():
            return error_response(503, "the server is stopping; it answers the requests in flight, no new ones.")
        return {"ready": True, "version": live.version}

    @app.get("/metrics", include_in_schema=False)
    def scrape() -> Response:
        if service is None:
            raise ApiError(404, "metrics are off on this server (it was started with --no-metrics).")
        return Response(service.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/api/search", response_model=SearchAnswer, responses=ERRORS, openapi_extra=search_body_schema())
    async def search(request: Request) -> SearchAnswer:
        """The k gallery images nearest a query (composed, text only or image only), within its filters."""
        started = time.perf_counter()
        query = await read_query(request, live.current)
        if service is not None:
            service.phases.labels("parse").observe(time.perf_counter() - started)
        answer = await asyncio.wrap_future(batcher.submit(query))
        request.state.kind = answer.kind
        return SearchAnswer.of(answer, query.k)

    @app.get("/api/filters")
    def filters() -> dict[str, Any]:
        """The columns a search can filter on, with their values (text) or range (numbers)."""
        engine, columns = live.current, {}
        for column in engine.filter.columns:
            if column in engine.filter.numeric:
                values = engine.filter.numeric[column].dropna()
                columns[column] = {"kind": "number", "min": float(values.min()), "max": float(values.max())}
            else:
                counts = engine.filter.table[column].astype(str).str.strip()
                counts = counts[counts != ""].value_counts()
                columns[column] = {"kind": "text", "values": counts.index[:200].tolist()}
        return {"columns": columns}

    @app.get("/api/gallery")
    def gallery(category: str = "", q: str = "", offset: Annotated[int, QueryParameter(ge=0)] = 0,
                limit: Annotated[int, QueryParameter(ge=1, le=200)] = 48) -> dict[str, Any]:
        engine = live.current
        categories = engine.category_names
        if category and category not in categories:
            raise ApiError(400, f"unknown category {category[:40]!r}; the gallery has {', '.join(categories)}.")
        table = engine.gallery
        if category:
            table = table[table["category"] == category]
        if q.strip():
            needle, named = q.strip().lower(), engine.resolve(q.strip(), files=False)  # a file name or path finds it
            table = table[table["name"].str.lower().str.contains(needle, regex=False, na=False)
                          | table["caption"].str.lower().str.contains(needle, regex=False, na=False)
                          | (table["name"] == named)]
        page = table.iloc[offset:offset + limit]
        return {"total": len(table), "offset": offset, "limit": limit, "categories": categories,
                "items": page[["name", "category", "split", "caption"]].to_dict("records")}

    @app.get("/api/queries")
    def queries(category: str = "", offset: Annotated[int, QueryParameter(ge=0)] = 0,
                limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20) -> dict[str, Any]:
        table = rankings.load()
        if table is None:
            return {"available": False, "message": f"There are no validation rankings yet ({paths.val_rankings} "
                                                   f"is missing): run `dvc repro` to train and evaluate the model."}
        known = sorted(table["category"].unique().tolist())
        if category and category not in known:
            raise ApiError(400, f"unknown category {category[:40]!r}; the validation queries have "
                                f"{', '.join(known)}.")
        if category:
            table = table[table["category"] == category]
        ranks, engine = table["target_rank"], live.current
        return {"available": True, "total": len(table), "failures": int((~ranks.between(1, TOP)).sum()),
                "offset": offset, "limit": limit, "categories": known,
                "items": [query_item(row, engine) for row in table.iloc[offset:offset + limit].itertuples()]}

    @app.get("/images/{name:path}")
    def image(name: str) -> FileResponse:
        engine = live.current
        found = None if name.startswith("/") else engine.resolve(name, files=False)  # a URL holds no absolute path
        if found is None:
            raise ApiError(404, f"no gallery image is named {name[:80]!r}.")
        path = Path(engine.paths[engine.row_of[found]])  # the engine resolved it against the repository
        if not path.is_file():
            raise ApiError(404, f"the file of gallery image {name!r} is missing.")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers=CACHE)

    @app.get("/api/recall")
    def recall() -> dict[str, Any]:
        """metrics/eval_context.json: each val recall beside its gallery size, chance level and the stage-1 model's."""
        if not paths.eval_context.is_file():
            return {"available": False, "message": f"There is no evaluation yet ({paths.eval_context} is missing): "
                                                   f"run `dvc repro` to train and evaluate the model."}
        return {"available": True, "small_chance_r10": SMALL_CHANCE_R10,
                "context": json.loads(paths.eval_context.read_text())}

    app.mount("/static", PageFiles(directory=STATIC), name="static")
    app.mount("/training", TrainingPlots(directory=paths.plots_report, html=True, check_dir=False), name="training")
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
