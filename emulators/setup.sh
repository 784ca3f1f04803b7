#!/usr/bin/env bash
# Create .venv with Francine and its development tools, once: later runs install again
# only when pyproject.toml changed (a stamp in .venv holds the hash it was installed
# from). The Firestore and Pub/Sub emulators come with the Google Cloud CLI (gcloud,
# Java 17); the Cloud Storage emulator is the PyPI package gcp-storage-emulator.
# Nothing here runs apt-get: the browser test's chromium is CI's (.ci/run) or yours.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcloud >/dev/null; then
  echo "gcloud (Google Cloud CLI with the Firestore and Pub/Sub emulators) is required" >&2
  exit 1
fi
stamp=.venv/.francine-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
step() {  # step WHAT COMMAND...: say what is installed and how long it took
  local what=$1 t0=$SECONDS
  shift
  echo "setup: $what…" >&2
  "$@"
  echo "setup: $what took $((SECONDS - t0)) s" >&2
}
if [ ! -x .venv/bin/python ]; then
  step "a virtual environment in .venv" python3 -m venv .venv
fi
step "Francine with its tools, Blender (bpy) and Open Image Denoise (pyproject.toml)" \
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,blender,denoise]'
echo "$want" > "$stamp"
