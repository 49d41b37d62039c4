#!/usr/bin/env bash
# Install everything the project needs: system packages (ffmpeg; python3 + venv where they
# are missing) from Debian/Ubuntu, then .venv with the Python package and the given extras.
#   scripts/install.sh                 # the service on CPU
#   scripts/install.sh cpu,train,dev,cluster   # + trainer, tests, Ray (what CI runs; dev adds Debian's chromium)
#   scripts/install.sh gpu             # the service with onnxruntime-gpu
# The same script is what CI and the Docker images run; the images split it in two steps:
#   scripts/install.sh --system                    # only the system packages (runtime stage)
#   scripts/install.sh --python --no-editable cpu  # only .venv, the package copied in (build stage)
set -euo pipefail
cd "$(dirname "$0")/.."

steps="system python"
editable="-e"
extras="cpu"
for arg in "$@"; do
  case "$arg" in
    --system) steps="system" ;;
    --python) steps="python" ;;
    --no-editable) editable="" ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) extras="$arg" ;;
  esac
done
python="${PYTHON:-python3}"

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "missing: $* — install them with your package manager (e.g. brew install ffmpeg)" >&2
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [[ " $steps " == *" system "* ]]; then
  packages=()
  if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    packages+=(ffmpeg)
  fi
  if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
    packages+=(python3 python3-venv)  # e.g. the CUDA base images ship no Python
  fi
  # The dev extra's browser test (tests/test_demo_page.py) drives Debian's Chromium through
  # its chromedriver: both from apt, never a browser download. Elsewhere the test skips.
  if [[ ",$extras," == *",dev,"* ]] && { ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; }; then
    if command -v apt-get >/dev/null; then
      packages+=(chromium chromium-driver)
    else
      echo "note: chromium + chromedriver not installed: the browser test will skip" >&2
    fi
  fi
  if [ ${#packages[@]} -gt 0 ]; then
    apt_install "${packages[@]}"
  fi
fi

if [[ " $steps " == *" python "* ]]; then
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # shellcheck disable=SC2086  # $editable is empty or "-e"
  .venv/bin/python -m pip install -q $editable ".[${extras}]"
fi
