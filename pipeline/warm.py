"""A warm interpreter for the DAG's stages: the heavy libraries imported once, a freshly forked process per stage.

DVC runs every stage as its own `python -m stages.<name>`, and a stage that trains, embeds or searches first spends
seconds importing torch and open_clip (which imports torchvision, torch._dynamo, sympy and transformers), FAISS and
pandas, most of the demo DAG's fixed cost (measured in benchmarks/RESULTS.md). `fashion-cir warm -- dvc repro` (what
`make repro` runs) starts one server that imports them once, then runs the command with FASHION_CIR_WARM set to the
server's socket. Each stage hands itself over (`stages/__init__.py` calls `hand_over` before the stage imports anything
heavy): the server forks a process that runs the stage as `python -m` would, with the stage's working directory,
environment, arguments and standard streams (sent as file descriptors), importing `pipeline` and `stages` afresh from
that directory, so an experiment runs its own code. The stage's exit status, and signals sent to it, pass through.
Without the variable, or when the server does not answer, a stage runs in its own interpreter as before; the outputs are
the same bytes either way (tests/test_warm.py).

Why forking is safe: the server runs no torch op, so it holds no CUDA context and no OpenMP pool for a child to
inherit (each stage starts its own); the only threads it has are those numpy's OpenBLAS and pyarrow's jemalloc start
at import, and both have fork handlers (the forking DataLoader workers every torch user runs rely on the same).
Only the user can reach the socket: it lives in a 0700 temporary directory.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import io
import json
import os
import runpy
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import PipelineError

SOCKET_VARIABLE = "FASHION_CIR_WARM"
# What the stages import that costs time; one missing (an optional extra) is skipped, the stage imports it if needed.
PRELOAD = ("numpy", "pandas", "pyarrow.parquet", "PIL.Image", "yaml", "pydantic", "tqdm", "torch", "torchvision",
           "open_clip", "faiss", "dvclive")
OWN_PACKAGES = ("pipeline", "stages")  # imported afresh in every stage, from the stage's working directory
_LENGTH = struct.Struct("!I")
_READY = "ready"


# The wire: each message is a 4-byte length and that many bytes of JSON; the request also carries the client's
# stdin, stdout and stderr as file descriptors (SCM_RIGHTS) with its length.

def _send(connection: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    if fds:
        socket.send_fds(connection, [_LENGTH.pack(len(payload))], fds)
    else:
        connection.sendall(_LENGTH.pack(len(payload)))
    connection.sendall(payload)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        data += chunk
    return data


def _receive(connection: socket.socket, fds: int = 0) -> tuple[dict, list[int]]:
    if fds:
        header, received, _, _ = socket.recv_fds(connection, _LENGTH.size, fds)
        header += _receive_exactly(connection, _LENGTH.size - len(header)) if header else b""
    else:
        header, received = _receive_exactly(connection, _LENGTH.size), []
    if len(header) < _LENGTH.size:
        raise ConnectionError("the other side closed the connection")
    return json.loads(_receive_exactly(connection, _LENGTH.unpack(header)[0])), list(received)


# The client: a stage's own process, which waits for the forked one and ends as it ended.

def _module_run_by_python_m() -> str | None:
    """`stages.<name>` when this interpreter was started as `python -m stages.<name>`, else None."""
    arguments = sys.orig_argv
    if "-m" in arguments[:-1]:
        module = arguments[arguments.index("-m") + 1]
        if module.startswith("stages."):
            return module
    return None


def hand_over() -> None:
    """Run this `python -m stages.<name>` in the warm server, if one serves this environment, and exit as it did."""
    address, module = os.environ.get(SOCKET_VARIABLE), _module_run_by_python_m()
    if not address or module is None:
        return
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(address)
    except OSError as error:
        connection.close()
        print(f"warm server {address} does not answer ({error.strerror}); {module} runs in its own interpreter.",
              file=sys.stderr)
        return
    with connection:
        try:
            _send(connection, {"module": module, "argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)},
                  fds=[0, 1, 2])
            pid = _receive(connection)[0]["pid"]
        except ConnectionError:
            print(f"warm server {address} closed the connection; {module} runs in its own interpreter.",
                  file=sys.stderr)
            return
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the stage gets what this process gets
            signal.signal(number, lambda received, _frame: _signal(pid, received))
        try:
            status = _receive(connection)[0]["status"]
        except ConnectionError:
            print(f"{module}: the warm server's process ended without saying how the stage ended.", file=sys.stderr)
            status = 1
    _exit_as(status)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _exit_as(status: int) -> None:
    """Exit with `status` as os.waitstatus_to_exitcode gives it; a stage killed by a signal kills this process with
    the same signal, so DVC sees what it would have seen."""
    sys.stdout.flush()
    sys.stderr.flush()
    if status < 0:
        if -status != signal.SIGKILL:  # whose handler cannot be set, nor needs to be
            signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


# The server: imports once, then one forked supervisor per stage, which forks the stage and reports its end.

def serve(address: str) -> None:
    """Import PRELOAD, listen on `address`, and fork for every stage handed over until SIGTERM or the parent ends."""
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"  # an import that asks whether CUDA is there must not start it
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        sys.exit("importing the preloaded packages started CUDA, which no forked stage could use")
    gc.freeze()  # the imported objects stay out of every child's garbage collections, so their pages stay shared
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(address)
    except OSError as error:  # e.g. a TMPDIR so deep that the path passes the 107 bytes a socket's may have
        sys.exit(f"the warm server cannot listen on {address}: {error}")
    listener.listen()
    listener.settimeout(1.0)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()
    print(_READY, flush=True)
    with listener:
        while os.getppid() == parent:  # a server whose `fashion-cir warm` died stops within a second
            _reap_children()
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            if os.fork() == 0:
                listener.close()
                _supervise(connection)
            connection.close()


def _reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _supervise(connection: socket.socket) -> None:
    """Fork the stage, tell the client its pid, wait for it, report its exit status; never returns."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        connection.settimeout(None)
        request, fds = _receive(connection, fds=3)
        pid = os.fork()
        if pid == 0:
            connection.close()
            _run_stage(request, fds)
        for fd in fds:
            os.close(fd)
        _send(connection, {"pid": pid})
        _send(connection, {"status": os.waitstatus_to_exitcode(_wait_while_client_lives(pid, connection))})
    except ConnectionError:
        pass  # the client went away, and the stage with it: nobody is left to tell
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(0)


def _wait_while_client_lives(pid: int, connection: socket.socket) -> int:
    """The stage's wait status; a client that goes away (killed with SIGKILL, say) takes the stage with it, as it
    would have if the stage had run in it."""
    while True:
        finished, wait_status = os.waitpid(pid, os.WNOHANG)
        if finished:
            return wait_status
        readable, _, _ = select.select([connection], [], [], 0.2)
        if readable and not connection.recv(1, socket.MSG_PEEK):
            _signal(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]


def _run_stage(request: dict, fds: list[int]) -> None:
    """Become `python -m <module>` as the client would have been; never returns."""
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ.pop(SOCKET_VARIABLE, None)  # what the stage starts runs in its own interpreter
        _reopen_standard_streams()
        for name in [name for name in sys.modules if name.split(".")[0] in OWN_PACKAGES]:
            del sys.modules[name]
        importlib.invalidate_caches()
        sys.path[0] = request["cwd"]
        sys.argv = [request["module"], *request["argv"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = _exit_code(exit_.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()  # what interpreter shutdown would run (logging, multiprocessing, temporary files)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _exit_code(code: object) -> int:
    """SystemExit's argument as the interpreter turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _reopen_standard_streams() -> None:
    """sys.stdin/stdout/stderr on the client's descriptors, buffered as a fresh interpreter would buffer them."""
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

    def text(fd: int, mode: str, line_buffering: bool) -> io.TextIOWrapper:
        binary = io.open(fd, mode + "b", buffering=0 if unbuffered and mode == "w" else -1, closefd=False)
        return io.TextIOWrapper(binary, encoding=sys.stdout.encoding, errors=sys.stdout.errors,
                                line_buffering=line_buffering, write_through=unbuffered and mode == "w")

    sys.stdin = sys.__stdin__ = text(0, "r", False)
    sys.stdout = sys.__stdout__ = text(1, "w", os.isatty(1))
    sys.stderr = sys.__stderr__ = text(2, "w", True)


# The wrapper: `fashion-cir warm -- COMMAND`.

@contextmanager
def warm_server() -> Iterator[str | None]:
    """A warm server for the duration of the block, stopped after it. Yields the address to put in
    FASHION_CIR_WARM, or None (with a line on stderr saying why) when the server could not start."""
    directory = tempfile.mkdtemp(prefix="fashion-cir-warm-")
    address = os.path.join(directory, "socket")
    server = subprocess.Popen([sys.executable, "-m", "pipeline.warm", address], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in server.stdout:
            if line.strip() == _READY:
                yield address
                break
            print(line, end="", file=sys.stderr)
        else:
            print(f"fashion-cir warm: the warm server did not start (exit status {server.wait()}, its error is above); "
                  f"each stage runs in its own interpreter.", file=sys.stderr)
            yield None
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(directory, ignore_errors=True)


def run_warm(command: list[str]) -> int:
    """Run `command` with a warm server for its stages; returns the command's exit status."""
    if not command:
        raise PipelineError("fashion-cir warm needs a command to run, e.g. `fashion-cir warm -- dvc repro`.")
    if shutil.which(command[0]) is None:
        raise PipelineError(f"fashion-cir warm: no command '{command[0]}' found on PATH.")
    with warm_server() as address:
        child = subprocess.Popen(command, env={**os.environ, SOCKET_VARIABLE: address} if address else None)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the command had the same Ctrl-C: let it end as it ends
                continue


if __name__ == "__main__":
    serve(sys.argv[1])
