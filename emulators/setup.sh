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
# The viewer's browser test drives Debian's headless chromium (Playwright's own browser
# downloads cannot be used here). Installed once; later runs skip it.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    >/dev/null) || echo "warning: could not install chromium; the browser test will fail" >&2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,blender,denoise]'
