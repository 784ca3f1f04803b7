#!/usr/bin/env bash
# A Blender file through the whole pipeline: make a small demo scene with bpy (a floor
# with a checker texture beside the file, a glossy ball, a box, two lights), start the
# local stack with 2 workers, `francine render demo.blend` (the texture is found in the
# file and uploaded by its relative path), denoise at the root, stop the stack.
# Writes blender-demo.png. Arguments go to `francine render` (e.g. --parallel 16).
set -euo pipefail
cd "$(dirname "$0")/.."
bash emulators/setup.sh
work=.francine/blender-demo
mkdir -p "$work"
.venv/bin/python -m francine.producers.blender.examples "$work/demo.blend" \
    --width 320 --height 240 --texture textures/checker.png >/dev/null
rm -f "$work/stack.json"
.venv/bin/francine --state-dir "$work" stack up --workers 2 >"$work/stack.log" 2>&1 &
stack=$!
trap 'kill -INT $stack 2>/dev/null; wait $stack 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  [ -f "$work/stack.json" ] && break
  kill -0 $stack 2>/dev/null || { cat "$work/stack.log"; exit 1; }
  sleep 0.2
done
.venv/bin/francine --state-dir "$work" render "$work/demo.blend" -o blender-demo.png \
    --parallel 8 --samples 8 --tile 160 --denoise "$@"
