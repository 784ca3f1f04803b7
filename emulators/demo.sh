#!/usr/bin/env bash
# The main job: start the local stack, render the aobench scene through the pipeline
# with parallel 8, write aobench.png, print the time breakdown, stop the stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash emulators/setup.sh
exec .venv/bin/francine demo --parallel 8 -o aobench.png "$@"
