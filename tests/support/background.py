"""A command started now and waited for later: a long end-to-end run that overlaps the rest of the test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.dag import GIT_IDENTITY


class BackgroundRun:
    """`cmd` running in `cwd`, its output in `cwd`/../background.log; `wait()` gives what `tests.support.dag.run`
    gives for a command run in the foreground, and fails the same way."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str] | None = None):
        self.cmd, self.cwd = cmd, cwd
        self.log = cwd.parent / "background.log"
        environment = {**os.environ, **(env or {}), **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1",
                       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(cmd, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT,
                                            text=True)
        self.result: subprocess.CompletedProcess | None = None

    def wait(self, timeout: float = 3600) -> subprocess.CompletedProcess:
        if self.result is None:
            self.process.wait(timeout=timeout)
            output = self.log.read_text()
            self.result = subprocess.CompletedProcess(self.cmd, self.process.returncode, output, "")
            if self.process.returncode != 0:
                raise AssertionError(f"{' '.join(self.cmd)} failed:\n{output[-3000:]}")
        return self.result
