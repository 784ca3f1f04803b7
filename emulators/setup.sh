#!/usr/bin/env bash
# Create .venv with Francine and its development tools (idempotent).
# The Firestore and Pub/Sub emulators come with the Google Cloud CLI (gcloud, Java 17);
# the Cloud Storage emulator is the PyPI package gcp-storage-emulator, installed here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gcloud >/dev/null; then
  echo "gcloud (Google Cloud CLI with the Firestore and Pub/Sub emulators) is required" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,blender,denoise]'
