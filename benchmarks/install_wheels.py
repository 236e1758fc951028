"""Install the wheels of a folder into a target folder for PYTHONPATH, with no network and no pip: what
benchmarks/gpu_check.sh does on a GPU box that has PyTorch but not this project's other packages.

    python3 benchmarks/install_wheels.py .whl /tmp/fashion-cir-site            # only distributions not installed
    python3 benchmarks/install_wheels.py .whl /tmp/fashion-cir-site --all      # every wheel, shadowing installed ones

A wheel is a zip archive laid out for site-packages, so installing one with --no-deps is unpacking it (its
`*.data/purelib` and `platlib` parts at the top, `scripts` under bin/), as `pip install --no-deps --target` does,
in a second or two for a hundred wheels. By default a wheel is skipped when the interpreter already has its
distribution (the GPU box's own torch, numpy, requests... stay as they are); `--all` installs every wheel, for when
an installed distribution is too old for a wheel that needs it. Prints one JSON object: what was installed, what
was skipped.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
import zipfile
from pathlib import Path


def distribution(wheel: Path) -> tuple[str, str]:
    """(name, version) from a wheel's file name: name-version(-build)?-python-abi-platform.whl."""
    name, version = wheel.name.split("-")[:2]
    return name, version


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def unpack(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            parts = member.filename.split("/")
            if len(parts) > 2 and parts[0].endswith(".data"):
                if parts[1] in ("purelib", "platlib"):
                    destination = target.joinpath(*parts[2:])
                elif parts[1] == "scripts":
                    destination = target.joinpath("bin", *parts[2:])
                else:
                    continue
            else:
                destination = target / member.filename
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(destination, "wb") as out:
                shutil.copyfileobj(source, out)
            if member.external_attr >> 16 & 0o111:
                destination.chmod(0o755)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--all", action="store_true", help="install every wheel, even where installed")
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    done, skipped = [], []
    for wheel in sorted(args.wheels.glob("*.whl")):
        name, version = distribution(wheel)
        present = installed(normalised(name))
        if present is not None and not args.all:
            skipped.append(f"{normalised(name)} {present} (wheel {version})")
            continue
        unpack(wheel, args.target)
        done.append(f"{normalised(name)} {version}")
    print(json.dumps({"installed": done, "already_there": skipped}))


if __name__ == "__main__":
    main()
