"""A search request's body read into the engine's Query: JSON (SearchRequest) or a multipart form with the same
fields and an optional upload, whose size is capped while it is read (never read whole when it is too large)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message, Receive

from pipeline.search.api.errors import ApiError, sentence
from pipeline.search.engine import MAX_K, MAX_PIXELS, Query, SearchEngine

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024   # multipart boundaries, headers and the text fields around the image
DEFAULT_K = Query.k
TRUE = {"true", "1", "on", "yes"}


class SearchRequest(BaseModel):
    """A query: `reference` and `text` (composed), `text` alone, or `reference` alone (with the multipart form, an
    uploaded `image` can stand for `reference`)."""

    text: str = Field("", max_length=1000, description="the modification text (with a reference), or the whole query")
    reference: str = Field("", max_length=500, description="a gallery image's name")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description="how many results")
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


def search_body_schema() -> dict[str, Any]:
    """The request body for OpenAPI, written here because FastAPI declares one body kind per route: this one takes
    JSON or a multipart form, and reads the form itself, to cap an upload's size while reading it."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": SearchRequest.model_json_schema()},
        "multipart/form-data": {"schema": SearchForm.model_json_schema()}}}}


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
    """k from the form: a whole number in 1..MAX_K, DEFAULT_K when absent."""
    if value in (None, ""):
        return DEFAULT_K
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
