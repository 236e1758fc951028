"""The page a person uses: index.html at /, its code under /static/, the gallery's images by name under /images/,
and the offline training plots under /training/."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from pipeline.paths import Paths
from pipeline.search.api.deps import EngineDep
from pipeline.search.api.errors import ANY_FAILURE, BAD_REQUEST, ApiError, said

STATIC = Path(__file__).parent.parent / "static"
CACHE = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}  # gallery images
FRESH = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}  # the page's code: revalidated

router = APIRouter()


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


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


@router.get("/images/{name:path}", response_class=FileResponse,
            responses={200: {"description": "the image's file", "content": {"image/*": {}}},
                       401: BAD_REQUEST[401], 404: said("no gallery image is named so"), **ANY_FAILURE})
def image(name: str, engine: EngineDep) -> FileResponse:
    """A gallery image's file, looked up by a name the shop knows, never a path built from the request."""
    found = None if name.startswith("/") else engine.resolve(name, files=False)  # a URL holds no absolute path
    if found is None:
        raise ApiError(404, f"no gallery image is named {name[:80]!r}.")
    path = Path(engine.paths[engine.row_of[found]])  # the engine resolved it against the repository
    if not path.is_file():
        raise ApiError(404, f"the file of gallery image {name!r} is missing.")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=CACHE)


def mount_files(app: FastAPI, paths: Paths) -> None:
    """The page's code and the training plots, served as files."""
    app.mount("/static", PageFiles(directory=STATIC), name="static")
    app.mount("/training", TrainingPlots(directory=paths.plots_report, html=True, check_dir=False), name="training")
