"""`fashion-cir warm`: stages forked from one warm interpreter behave as stages started on their own, and write
the same bytes.

A probe package (`stages/probe.py` in a temporary directory, beside a copy of the real `stages/__init__.py`) stands
in for a stage where the test needs to see inside the process: what it received and whether it was forked from the
server. The whole DAG is the real check of the outputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pipeline.warm import SOCKET_VARIABLE, warm_server
from tests.conftest import FASHION_CIR, REPO
from tests.support.dag import ALL_STAGES, ran, restore_reference_run, run

PROBE = '''
import json, os, sys, time
import marker
action = sys.argv[1] if len(sys.argv) > 1 else "0"
try:  # from the first line on: a Ctrl-C sent once that line is read may land while it is still being printed
    print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "colour": os.environ.get("COLOUR"),
                      "warm": "torch" in sys.modules, "marker": marker.NAME, "socket": os.environ.get("%s")}),
          flush=True)
    print("to stderr", file=sys.stderr)
    if action == "sleep":
        time.sleep(60)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
if action == "kill":
    os.kill(os.getpid(), 9)
sys.exit(int(action))
''' % SOCKET_VARIABLE


def probe_package(root: Path, marker: str) -> Path:
    """A directory holding the real `stages/__init__.py`, a probe stage and a module of its own (`marker`)."""
    (root / "stages").mkdir(parents=True)
    shutil.copy(REPO / "stages" / "__init__.py", root / "stages" / "__init__.py")
    (root / "stages" / "probe.py").write_text(PROBE)
    (root / "marker.py").write_text(f"NAME = {marker!r}\n")
    return root


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with warm_server() as address:
        assert address is not None, "the warm server did not start"
        yield address


def probe(cwd: Path, address: str, *arguments: str) -> subprocess.Popen:
    env = {**os.environ, SOCKET_VARIABLE: address, "COLOUR": "red"}
    return subprocess.Popen([sys.executable, "-m", "stages.probe", *arguments], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def answer(process: subprocess.Popen) -> tuple[dict, str, int]:
    stdout, stderr = process.communicate(timeout=60)
    return json.loads(stdout.splitlines()[0]) if stdout else {}, stderr, process.returncode


def test_a_handed_over_stage_gets_the_callers_directory_environment_arguments_streams_and_status(
        tmp_path: Path, server: str):
    root = probe_package(tmp_path / "one", "one")
    seen, stderr, status = answer(probe(root, server, "3", "--flag"))
    assert seen == {"argv": ["3", "--flag"], "cwd": str(root), "colour": "red", "warm": True, "marker": "one",
                    "socket": None}  # forked from the server (torch already imported), which its own children skip
    assert stderr == "to stderr\n" and status == 3


def test_each_stage_imports_its_own_directorys_code_afresh(tmp_path: Path, server: str):
    first, second = probe_package(tmp_path / "a", "first"), probe_package(tmp_path / "b", "second")
    assert answer(probe(first, server))[0]["marker"] == "first"
    assert answer(probe(second, server))[0]["marker"] == "second"
    (first / "marker.py").write_text("NAME = 'edited'\n")
    assert answer(probe(first, server))[0]["marker"] == "edited"


def running(process: subprocess.Popen) -> dict:
    """What the probe saw, read from its first line, which it prints once it runs: it has been forked."""
    return json.loads(process.stdout.readline())


def processes_naming(text: str) -> int:
    """How many processes have `text` in their command line (read from /proc)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            count += text in cmdline.read_bytes().decode(errors="replace")
        except OSError:  # a process that ended while we looked
            continue
    return count


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def test_ctrl_c_reaches_the_stage_and_a_stage_killed_by_a_signal_kills_its_caller_alike(tmp_path: Path,
                                                                                          server: str):
    root = probe_package(tmp_path / "p", "p")
    sleeper = probe(root, server, "sleep")
    assert running(sleeper)["warm"] is True
    sleeper.send_signal(signal.SIGINT)
    _, stderr, status = answer(sleeper)
    assert "interrupted" in stderr and status == 130
    assert answer(probe(root, server, "kill"))[2] == -signal.SIGKILL


def test_a_stage_whose_caller_is_killed_is_killed_too(tmp_path: Path, server: str):
    """The server, and per running stage a supervisor and the stage itself (forked, so their command line is the
    server's), name the server's socket."""
    root = probe_package(tmp_path / "p", "p")
    wait_until(lambda: processes_naming(server) == 1)  # the earlier tests' supervisors may still be ending
    sleeper = probe(root, server, "sleep")
    assert running(sleeper)["warm"] is True
    assert processes_naming(server) == 3
    sleeper.kill()
    sleeper.wait()
    wait_until(lambda: processes_naming(server) == 1)  # the supervisor looks at the connection every 0.2 s


def test_without_an_answering_server_the_stage_runs_in_its_own_interpreter(tmp_path: Path):
    root = probe_package(tmp_path / "p", "p")
    seen, stderr, status = answer(probe(root, str(tmp_path / "no-such-socket")))
    assert seen["warm"] is False and status == 0
    assert stderr.startswith(f"warm server {tmp_path / 'no-such-socket'} does not answer")


def test_a_server_that_cannot_start_leaves_the_command_running_cold(tmp_path: Path):
    deep = tmp_path / ("d" * 100)  # the socket's path would pass the 107 bytes AF_UNIX allows
    deep.mkdir()
    result = subprocess.run([FASHION_CIR, "warm", "--", sys.executable, "-c",
                             f"import os; print(os.environ.get('{SOCKET_VARIABLE}'))"],
                            env={**os.environ, "TMPDIR": str(deep)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout == "None\n"
    assert "the warm server cannot listen on" in result.stderr
    assert "each stage runs in its own interpreter" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command, sentence", [([], "fashion-cir warm needs a command to run"),
                                                (["no-such-command-x"], "no command 'no-such-command-x' found")])
def test_a_bad_command_gets_one_sentence(command: list[str], sentence: str):
    result = subprocess.run([FASHION_CIR, "warm", "--", *command], capture_output=True, text=True)
    assert result.returncode == 1 and sentence in result.stderr and "Traceback" not in result.stderr


def output_hashes(lock: str) -> dict[str, str]:
    """Every stage output's md5 in a dvc.lock text."""
    stages = yaml.safe_load(lock)["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


@pytest.mark.e2e
def test_the_dag_run_warm_writes_the_same_bytes_as_the_dag_run_cold(tiny_repo: Path):
    """tiny_repo was reproduced with each stage in its own interpreter and committed; every stage forced again
    through the warm server must write the same bytes. The captioning report, the caption cache and the training
    stages' reports are the outputs that differ between two forced runs anyway: they count cache hits, remember the
    rewritten images' modification times, and time the stages."""
    restore_reference_run(tiny_repo)
    committed = output_hashes(run(["git", "show", "HEAD:dvc.lock"], tiny_repo).stdout)
    result = run([FASHION_CIR, "warm", "--", "dvc", "repro", "--force"], tiny_repo)
    assert ran(result.stdout) == ALL_STAGES
    assert "does not answer" not in result.stderr
    again = output_hashes((tiny_repo / "dvc.lock").read_text())
    changed = {path for path in committed if again[path] != committed[path]}
    assert changed == {"data/captions/report.json", "data/captions/cache.sqlite", "reports/stage1.json",
                       "reports/stage2.json"}
    restore_reference_run(tiny_repo)
