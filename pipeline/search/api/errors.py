"""How every failure is answered: {"error": one sentence}, with its status, whether the request was bad, the
framework refused it, or the server failed."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from pipeline.errors import PipelineError
from pipeline.search.api.answers import ErrorAnswer


class ApiError(Exception):
    """A bad request, answered with its status and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def said(why: str) -> dict[str, Any]:
    """An error answer as an OpenAPI `responses` entry."""
    return {"model": ErrorAnswer, "description": why}


# Declaring `default` also keeps FastAPI from listing a 422 answer: a request that fails validation is a 400 here.
ANY_FAILURE = {"default": said("any other failure, the server's own included, in one sentence")}
BAD_REQUEST = {400: said("the request cannot be answered as asked"),
               401: said("the API key is missing or wrong (send it as Authorization: Bearer <key> or X-API-Key)")}


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def sentence(text: str) -> str:
    """One sentence ending in a full stop, whatever the framework's message looked like."""
    text = str(text).strip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


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
