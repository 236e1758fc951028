#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu_check.sh installs on a GPU box with no network: every package this project runs
# (the DAG, DVC, DVCLive, the benchmarks) that such a box may lack, for CPython 3.12 on x86-64 Linux, one version
# each, into .whl/ at the repository root (git-ignored through .git/info/exclude, so it travels only when asked).
#
#   bash benchmarks/fetch_gpu_wheels.sh          # needs pip and PyPI; about 65 MB
#
# Left out, as the box has them with PyTorch (gpu_check.sh's report lists what it found): torch and its CUDA
# libraries, triton, sympy, mpmath, networkx, jinja2, markupsafe, filelock, fsspec, setuptools, numpy, pandas,
# python-dateutil, six, tzdata, pyarrow, pillow, tqdm, pyyaml, timm, torchvision. huggingface-hub, hf-xet and
# safetensors come with timm, but transformers (model.vision) needs newer ones than a
# box may have, so they are fetched too. Also left out: hydra-core, omegaconf and antlr4 (DVC imports them for
# `dvc exp` only; antlr4 has no wheel). The versions are this project's tested ones (its .venv); gpu_check.sh
# installs a wheel only where the box lacks the package (every wheel when an import fails with those the box has).
# To redo the list after an upgrade: walk Requires-Dist from open_clip_torch, faiss-cpu, dvc, dvclive, pydantic,
# ruamel.yaml and transformers in the .venv (for Python 3.12 on Linux), minus the packages above.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
PACKAGES=(
  aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiohttp-retry==2.9.1 aiosignal==1.4.0 amqp==5.4.2
  annotated-types==0.8.0 anyio==4.16.0 appdirs==1.4.4 asyncssh==2.24.1 atpublic==9.0.0
  attrs==26.1.0 billiard==4.3.2 celery==5.7.0 certifi==2026.10.19.post1 cffi==2.1.1
  charset-normalizer==3.5.3 click==8.5.1 click-didyoumean==0.3.1 click-plugins==1.1.1.2 click-repl==0.4.1
  colorama==0.4.6 configobj==5.0.9 cryptography==50.0.2 dictdiffer==0.10.0 diskcache==5.6.3
  distro==1.9.0 dpath==2.2.0 dulwich==1.2.21 dvc==3.67.1 dvc-data==3.18.3
  dvc-http==2.32.0 dvc-objects==5.2.0 dvc-render==1.0.2 dvc-studio-client==0.23.0 dvc-task==0.40.2
  dvclive==3.49.1 entrypoints==0.4.2 faiss-cpu==1.15.1 flatten-dict==0.5.0 flufl-lock==9.2.0
  frozenlist==1.8.0 ftfy==6.3.1 funcy==2.1 gitdb==4.0.12 gitpython==3.2.1
  grandalf==0.8 gto==1.10.1 h11==0.16.0 httpcore2==2.16.2 httpx2==2.16.2
  idna==3.20 iterative-telemetry==0.0.10 kombu==5.7.0 markdown-it-py==4.3.0 mdurl==0.1.2
  multidict==7.2.1 open-clip-torch==3.3.0 orjson==3.13.0 packaging==26.4 pathspec==1.1.1
  platformdirs==4.14.9 prompt-toolkit==3.0.53 propcache==0.5.4 psutil==7.2.2 pycparser==3.12
  pydantic==2.14.4 pydantic-core==2.50.5 pydantic-settings==2.16.3 pydot==4.0.1 pygit2==1.21.0
  pygments==2.21.0 pygtrie==2.6.2 pyparsing==3.3.3 python-dotenv==1.2.4 regex==2026.11.19
  requests==2.34.2 rich==15.0.0 ruamel-yaml==0.19.1 scmrepo==3.6.2 semver==3.1.2
  shortuuid==1.0.13 shtab==1.13.0 smmap==5.0.3 sqltrie==0.11.3 tabulate==0.10.0
  tomlkit==0.15.2 truststore==0.10.5 typing-extensions==4.16.0 typing-inspection==0.4.5 tzlocal==5.4.5
  urllib3==2.8.0 vine==5.1.0 voluptuous==0.16.0 wcwidth==0.9.4 yarl==1.25.1
  zc-lockfile==4.0
  # transformers and what it needs beyond the packages above
  annotated-doc==0.0.7 hf-xet==1.8.0 huggingface-hub==2.4.0 kernels==0.19.1 safetensors==0.8.0
  shellingham==1.5.4 tokenizers==0.23.3 transformers==5.25.0 typer==0.29.2
)
mkdir -p "$REPO/.whl"
"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$REPO/.whl" "${PACKAGES[@]}"
EXCLUDE="$(git -C "$REPO" rev-parse --git-path info/exclude 2>/dev/null || true)"
if [ -n "$EXCLUDE" ]; then
  case "$EXCLUDE" in /*) ;; *) EXCLUDE="$REPO/$EXCLUDE" ;; esac
  mkdir -p "$(dirname "$EXCLUDE")"
  grep -qx '/.whl/' "$EXCLUDE" 2>/dev/null || echo '/.whl/' >> "$EXCLUDE"
fi
du -sh "$REPO/.whl"
