#!/usr/bin/env bash
# Install everything the project needs into .venv: ffmpeg (Debian/Ubuntu package, if
# missing) and the Python package with the given extras (default: cpu).
#   scripts/install.sh                 # the service on CPU
#   scripts/install.sh cpu,train,dev   # + trainer and tests
# The same script is what CI and the Docker images run.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu}"

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  if command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
  else
    echo "ffmpeg and ffprobe are needed: install them with your package manager (e.g. brew install ffmpeg)" >&2
    exit 1
  fi
fi

python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[${extras}]"
