#!/usr/bin/env bash
# Installs exactly the serving lock (deployments/serving/requirements.lock) into one Python
# environment, then checks it: the image build runs this, and so does a test, in a fresh venv.
#
#   install.sh [PYTHON] [LOCK]     defaults: python, the lock beside this repository's tree
#
# --no-deps: the lock is the whole environment, so pip resolves nothing and adds nothing.
# torch is pinned as 2.13.0: give pip an index with the CPU build (PIP_EXTRA_INDEX_URL, as the
# Dockerfile does); the default Linux wheel would need the CUDA packages the lock leaves out.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${1:-python}"
lock="${2:-$here/../serving/requirements.lock}"

"$python" -m pip install --no-cache-dir --no-deps --requirement "$lock"
"$python" -m pip check
