"""`fashion-cir serve`: a small web app over the trained model, for a person to try queries and to see where the
model fails.

One static page (static/index.html, app.js, style.css; no CDN, works offline) calls a JSON API:

    GET  /                    the page: Search | Validation queries | (a slot for training plots)
    POST /api/search          multipart form: text, k (1..100, default 10), and reference (a gallery name) or image
    GET  /api/gallery         the gallery, filtered (category, q: a substring of name or caption) and paged
    GET  /api/queries         the val queries as `evaluate` ranked them (Paths.val_rankings), failures first
    GET  /images/{name}       a gallery image's file, looked up by name only (never a path built from the request)
    GET  /training/           the training plots, offline (`fashion-cir plots`, rendered when the server starts)
    GET  /health              liveness, gallery size, whether rankings exist

A bad request gets a 4xx answer with {"error": "<one sentence>"} and the server carries on. Uploads stop with 413
as soon as the body passes MAX_UPLOAD_BYTES, without reading the rest.
"""

from __future__ import annotations

import mimetypes
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from pipeline.errors import PipelineError
from pipeline.evaluation.plots import render_plots
from pipeline.paths import Paths
from pipeline.search.engine import SearchEngine

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024   # multipart boundaries, headers and the text fields around the image
MAX_K = 100
TOP = 10
STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
CACHE = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}  # gallery images
FRESH = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}  # the page's code: revalidated


class ApiError(Exception):
    """A bad request, answered with its status and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


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


def parse_k(value: Any) -> int:
    """k from the form: a whole number in 1..MAX_K, 10 when absent."""
    if value in (None, ""):
        return TOP
    if not isinstance(value, str) or not value.strip().isdigit() or not 1 <= int(value) <= MAX_K:
        raise ApiError(400, f"k must be a whole number from 1 to {MAX_K}, not {str(value)[:20]!r}.")
    return int(value)


async def query_image(form: FormData, engine: SearchEngine) -> str | bytes:
    """The reference: a known gallery name, or the uploaded file's bytes; never a path the client chose."""
    reference = form.get("reference")
    upload = form.get("image")
    has_upload = isinstance(upload, UploadFile) and bool(upload.filename or upload.size)
    has_reference = isinstance(reference, str) and bool(reference)
    if has_upload == has_reference:
        raise ApiError(400, "give exactly one reference: a gallery image's name (reference) or a file (image).")
    if has_upload:
        if (upload.size or 0) > MAX_UPLOAD_BYTES:  # the body cap above allows for the form around the file
            raise too_large()
        return await upload.read()
    if reference not in engine.row_of:
        raise ApiError(400, f"no gallery image is named {reference[:80]!r}.")
    return reference


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


def create_app(paths: Paths, engine: SearchEngine) -> FastAPI:
    """The app over an opened engine; tests build it directly, `serve` runs it under uvicorn."""
    app = FastAPI(title="fashion-cir", docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    rankings, lock = Rankings(paths.val_rankings), threading.Lock()
    categories = sorted(engine.gallery["category"].unique().tolist())

    def locked_search(image: str | bytes, text: str, k: int) -> dict[str, Any]:
        with lock:  # one query at a time: the model is shared and the CPU is busy anyway
            answer = engine.search(image, text, k)
        hits = [{key: value for key, value in asdict(hit).items() if key != "path"} for hit in answer.hits]
        return {"reference": answer.reference, "text": answer.text, "query_text": answer.query_text, "k": k,
                "milliseconds": round(answer.milliseconds, 1), "hits": hits}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{asset}", include_in_schema=False)
    def static(asset: str) -> FileResponse:
        if asset not in ASSETS:
            raise ApiError(404, f"no static file {asset[:80]!r}.")
        return FileResponse(STATIC / asset, media_type=ASSETS[asset], headers=FRESH)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "images": len(engine.gallery), "rankings": paths.val_rankings.is_file(),
                "max_upload_bytes": MAX_UPLOAD_BYTES}

    @app.post("/api/search")
    async def search(request: Request) -> dict[str, Any]:
        form = await read_form(request)
        try:
            k, text = parse_k(form.get("k")), form.get("text")
            if not isinstance(text, str):
                raise ApiError(400, "the form needs a text field: what should change, e.g. \"is red\".")
            image = await query_image(form, engine)
        finally:
            await form.close()  # an upload's spooled temporary file
        return await run_in_threadpool(locked_search, image, text, k)

    @app.get("/api/gallery")
    def gallery(category: str = "", q: str = "", offset: Annotated[int, Query(ge=0)] = 0,
                limit: Annotated[int, Query(ge=1, le=200)] = 48) -> dict[str, Any]:
        if category and category not in categories:
            raise ApiError(400, f"unknown category {category[:40]!r}; the gallery has {', '.join(categories)}.")
        table = engine.gallery
        if category:
            table = table[table["category"] == category]
        if q.strip():
            needle = q.strip().lower()
            table = table[table["name"].str.lower().str.contains(needle, regex=False, na=False)
                          | table["caption"].str.lower().str.contains(needle, regex=False, na=False)]
        page = table.iloc[offset:offset + limit]
        return {"total": len(table), "offset": offset, "limit": limit, "categories": categories,
                "items": page[["name", "category", "split", "caption"]].to_dict("records")}

    @app.get("/api/queries")
    def queries(category: str = "", offset: Annotated[int, Query(ge=0)] = 0,
                limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
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
        ranks = table["target_rank"]
        return {"available": True, "total": len(table), "failures": int((~ranks.between(1, TOP)).sum()),
                "offset": offset, "limit": limit, "categories": known,
                "items": [query_item(row, engine) for row in table.iloc[offset:offset + limit].itertuples()]}

    @app.get("/images/{name:path}")
    def image(name: str) -> FileResponse:
        row = engine.row_of.get(name)
        if row is None:
            raise ApiError(404, f"no gallery image is named {name[:80]!r}.")
        path = Path(engine.gallery["path"].iat[row])  # the engine resolved it against the repository
        if not path.is_file():
            raise ApiError(404, f"the file of gallery image {name!r} is missing.")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers=CACHE)

    @app.get("/training/{name:path}", include_in_schema=False)
    def training(name: str) -> FileResponse:
        """The offline plots page (`fashion-cir plots`) and its files, looked up among the files it wrote."""
        report = paths.plots_report
        files = {p.relative_to(report).as_posix(): p for p in report.rglob("*") if p.is_file()} \
            if report.is_dir() else {}
        path = files.get(name or "index.html")
        if path is None:
            raise ApiError(404, "no training plots here; run `fashion-cir plots` (after `dvc repro`)." if not files
                           else f"no plot file {name[:80]!r}.")
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
                            headers=FRESH)

    return app


def serve(paths: Paths, host: str = "127.0.0.1", port: int = 8000, checkpoint: Path | None = None) -> None:
    """Open the index and model once (a bad setup is one sentence before any socket opens), then serve."""
    import uvicorn

    engine = SearchEngine.open(paths, checkpoint)
    try:
        render_plots(paths.root, paths.plots_report, [])
    except PipelineError as error:  # the page works without its training plots
        print(f"fashion-cir: no training plots ({error})", flush=True)
    print(f"fashion-cir: {len(engine.gallery)} gallery images; open http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(paths, engine), host=host, port=port, log_level="info")
