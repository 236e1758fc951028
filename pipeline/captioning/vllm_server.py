"""A vLLM OpenAI-compatible server the caption stage starts, waits for, checks and always stops.

Started in its own process group on a free loopback port, with its log in a file; `/health` is polled with a time
limit, and the server is stopped by its PID (SIGTERM, then SIGKILL) on success, on error, on Ctrl-C and on SIGTERM,
so a failed stage never leaves a GPU-holding server behind. An already running server (`caption.url`) is checked
instead: it must list the expected model on `/v1/models`.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CaptionParams
from pipeline.errors import PipelineError


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def served_models(url: str) -> list[str]:
    """Model ids a running OpenAI-compatible server lists on /v1/models."""
    try:
        status, body = _get(f"{url.rstrip('/')}/v1/models")
    except (urllib.error.URLError, OSError) as error:
        raise PipelineError(f"caption.url = {url!r} does not answer ({getattr(error, 'reason', error)}); "
                            f"start the server or set caption.url to \"\" to let the stage start one.") from None
    if status != 200:
        raise PipelineError(f"caption.url = {url!r} answered /v1/models with HTTP {status}; expected a vLLM "
                            f"OpenAI-compatible server.")
    return [entry["id"] for entry in json.loads(body).get("data", [])]


def check_serves(url: str, model: str) -> None:
    models = served_models(url)
    if model not in models:
        raise PipelineError(f"the server at caption.url = {url!r} serves {models}, not caption.model = {model!r}; "
                            f"point caption.url at a server of that model or change caption.model.")


def server_version(url: str) -> str:
    """vLLM's version from its /version endpoint ("unknown" for servers without one)."""
    try:
        status, body = _get(f"{url.rstrip('/')}/version")
        return json.loads(body).get("version", "unknown") if status == 200 else "unknown"
    except (urllib.error.URLError, OSError, ValueError):
        return "unknown"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(command: str, model: str, port: int, dtype: str, extra_args: list[str]) -> list[str]:
    """`vllm serve` (or `python -m vllm.entrypoints.openai.api_server`, same flags) for `model` on loopback."""
    args = [*shlex.split(command), "--model", model, "--served-model-name", model, "--host", "127.0.0.1",
            "--port", str(port), "--limit-mm-per-prompt", '{"image": 1}']
    if dtype != "auto":
        args += ["--dtype", dtype]
    return args + list(extra_args)


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(text[-lines:])


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path


class _Terminated(Exception):
    """SIGTERM while a server runs: unwinds like Ctrl-C so the server is stopped too."""


@contextmanager
def running_server(command: list[str], port: int, startup_timeout: float,
                   log_path: Path | None = None) -> Iterator[Server]:
    """Start `command` (a server listening on `port`), yield it once /health answers 200, stop it after."""
    log_path = log_path or Path(tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "ab") as log:
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except FileNotFoundError:
            raise PipelineError(f"caption.serve_command = {shlex.join(command[:1])!r} was not found; install vLLM "
                                f"or set caption.serve_command (e.g. 'python -m vllm.entrypoints.openai.api_server')."
                                ) from None

    def on_sigterm(signum: int, frame: object) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        _wait_healthy(process, url, startup_timeout, log_path)
        yield Server(url, process, log_path)
    except _Terminated:
        raise KeyboardInterrupt from None
    finally:
        stop(process)
        signal.signal(signal.SIGTERM, previous)


def launch(params: CaptionParams, model: str, log_path: Path | None = None
           ) -> AbstractContextManager[Server]:
    """`running_server` for `model` as the caption params describe it (serve_command, dtype, serve_args, timeout),
    on a free loopback port."""
    port = free_port()
    command = serve_command(params.serve_command, model, port, params.dtype, params.serve_args)
    print(f"starting the vLLM server: {' '.join(command)}", flush=True)
    return running_server(command, port, params.startup_timeout, log_path)


def _wait_healthy(process: subprocess.Popen, url: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PipelineError(f"the vLLM server exited with status {process.returncode} before becoming healthy; "
                                f"its log ({log_path}) ends: {_tail(log_path, 3) or '(empty)'}")
        try:
            if _get(f"{url}/health", timeout=2.0)[0] == 200:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise PipelineError(f"the vLLM server did not answer {url}/health within caption.startup_timeout = {timeout:g} s;"
                        f" its log ({log_path}) ends: {_tail(log_path, 3) or '(empty)'}")


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the server's whole process group, then SIGKILL whatever is left of it (vLLM spawns engine workers
    that can outlive the API process) after it exits or `grace` seconds pass."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
