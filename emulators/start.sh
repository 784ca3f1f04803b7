#!/usr/bin/env bash
# Start the whole local stack (emulators, api, render workers, reducer) in the
# foreground; Ctrl-C stops all of it. Arguments go to `francine stack up`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash emulators/setup.sh
exec .venv/bin/francine stack up "$@"
