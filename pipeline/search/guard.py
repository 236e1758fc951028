"""The API key of `fashion-cir serve`: read from the environment variable FASHION_CIR_API_KEY, required when the
server listens beyond loopback (a shop's search is not for whoever finds the port), optional on this machine.

A request carries it as `Authorization: Bearer <key>`, `X-API-Key: <key>`, or the cookie `fashion_cir_key` (what
the page sets once a person typed the key, so its image thumbnails load too). Without the right key every route
answers 401 with one sentence, except what a load balancer or a person's first visit needs: /health, /ready and the
page itself (/, /static/...), which asks for the key.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from http.cookies import SimpleCookie
from urllib.parse import unquote

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.errors import PipelineError

KEY_VARIABLE = "FASHION_CIR_API_KEY"
COOKIE = "fashion_cir_key"
OPEN_PATHS = ("/health", "/ready", "/")
OPEN_PREFIXES = ("/static/",)
MIN_KEY_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key(host: str) -> str | None:
    """The key the server must be given, None where none is needed; one sentence when one is missing or weak."""
    key = os.environ.get(KEY_VARIABLE, "")
    if not key:
        if is_loopback(host):
            return None
        raise PipelineError(f"--host {host} listens beyond this machine, so the server needs an API key: set "
                            f"{KEY_VARIABLE} to a secret of at least {MIN_KEY_LENGTH} characters (e.g. "
                            f"`export {KEY_VARIABLE}=$(openssl rand -hex 24)`), or listen on 127.0.0.1.")
    if len(key) < MIN_KEY_LENGTH:
        raise PipelineError(f"{KEY_VARIABLE} is {len(key)} characters long; use a secret of at least "
                            f"{MIN_KEY_LENGTH} (e.g. `openssl rand -hex 24`).")
    return key


def presented(headers: Headers) -> str:
    """The key a request carries, "" for none."""
    authorization = headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    if "x-api-key" in headers:
        return headers["x-api-key"].strip()
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header carries no key
        return ""
    return unquote(cookie[COOKIE].value) if COOKIE in cookie else ""  # the page URI-encodes it


class ApiKeyGuard:
    """ASGI middleware: 401 with one sentence for a request without the key, where one is required."""

    def __init__(self, app: ASGIApp, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if hmac.compare_digest(presented(Headers(scope=scope)).encode(), self.key):
            await self.app(scope, receive, send)
            return
        answer = JSONResponse({"error": f"this server needs its API key ({KEY_VARIABLE} where it runs): send it as "
                                        f"'Authorization: Bearer <key>' or 'X-API-Key: <key>'."},
                              status_code=401, headers={"WWW-Authenticate": "Bearer"})
        await answer(scope, receive, send)
