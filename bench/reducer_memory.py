"""Peak memory of the reducer's root for a 4096² RGB image at parallel 256.

    .venv/bin/python bench/reducer_memory.py

Writes the root's children as partial objects to a temporary directory (random pixels:
the reducer's work does not depend on them), then, in a fresh process per case, runs
what the reducer runs for the root (francine/domain/reduction.py: children fetched two at a
time (the one being added and the next) and added as they arrive without
copying their pixels; the sum kept; the mean in bands of rows; PNG encoding in bands) and
prints the process's peak RSS, its RSS just before reducing (interpreter, NumPy, the Google
clients), and the planner's estimate (``reduction.peak_bytes``), which must be above.
Two tilings: one tile per pass (every child is the whole image, fan-in 16) and 1024²
tiles (fan-in 64). For the second, it also runs the former way (every child downloaded,
then combined at once) for comparison.
"""

from __future__ import annotations

import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "shared"))
SIZE, PARALLEL, CHANNELS = 4096, 256, 3


def rss_mib(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, in MiB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(directory: str, tile: int, mode: str) -> None:
    import google.cloud.firestore  # noqa: F401  (what a reducer instance has loaded)
    import google.cloud.storage  # noqa: F401

    from francine.base.concurrency import fetched_in_order
    from francine.domain import imaging, planning, reduction
    from francine.handlers.reducer import Reducer  # noqa: F401

    shape = planning.make_shape(SIZE, SIZE, PARALLEL, tile)
    folder = pathlib.Path(directory)

    def get(node: str) -> bytes:
        return (folder / f"{node}.npz").read_bytes()

    before = rss_mib("VmRSS")
    if mode == "bounded":
        combined = reduction.accumulate(shape, shape.root, fetched_in_order(
            get, planning.children(shape, shape.root), reduction.WINDOW))
    else:
        parts = [get(n) for n in planning.children(shape, shape.root)]
        combined = imaging.combine(imaging.load_partial(b) for b in parts)
        del parts
    # The root also keeps the sum of the passes (an extension adds to it).
    kept = imaging.dump_partial(combined)
    mean = combined.mean()
    del combined, kept
    png = imaging.encode(mean, "png", "srgb")
    print(json.dumps({"before_mib": round(before), "peak_mib": round(rss_mib()),
                      "estimate_mib": reduction.peak_bytes(shape, CHANNELS) >> 20,
                      "fan_in": shape.fan_in, "png_bytes": len(png)}))


def write_children(folder: pathlib.Path, tile: int) -> None:
    from francine.domain import imaging, planning, reduction

    shape = planning.make_shape(SIZE, SIZE, PARALLEL, tile)
    rng = np.random.default_rng(0)
    written: dict = {}  # children over the same rectangle share one file
    for node in planning.children(shape, shape.root):
        x0, y0, x1, y1 = reduction.region(shape, node)
        if (x0, y0, x1, y1) in written:
            os.link(written[x0, y0, x1, y1], folder / f"{node}.npz")
            continue
        written[x0, y0, x1, y1] = folder / f"{node}.npz"
        # each child's count cells say it holds a sixteenth of the passes: any positive
        # count does for the reducer's work
        sum_ = imaging.quantize(rng.random((y1 - y0, x1 - x0, CHANNELS), dtype=np.float32))
        sq = np.ones((y1 - y0, x1 - x0, 1), np.float32)
        count = np.ones((-(-(y1 - y0) // tile), -(-(x1 - x0) // tile)), np.float32)
        (folder / f"{node}.npz").write_bytes(
            imaging.dump_partial(imaging.Partial(x0, y0, tile, sum_, count, sq)))
        del sum_, sq


def run(folder: pathlib.Path, tile: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(folder), str(tile), mode],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    image_mib = SIZE * SIZE * (CHANNELS * 8 + 4) >> 20
    print(f"{SIZE}×{SIZE} RGB at parallel {PARALLEL}: one partial (fixed-point sum and "
          f"sum of squares) is {image_mib} MiB")
    last = None
    for tile, modes in ((SIZE, ["bounded"]), (1024, ["bounded", "all at once"])):
        with tempfile.TemporaryDirectory(prefix="francine-reduce-") as d:
            write_children(pathlib.Path(d), tile)
            for mode in modes:
                r = run(pathlib.Path(d), tile, mode)
                print(f"tile {tile}: fan-in {r['fan_in']}, {mode}: peak RSS {r['peak_mib']} MiB"
                      f" (before reducing {r['before_mib']} MiB, planner's estimate "
                      f"{r['estimate_mib']} MiB)")
                if mode == "bounded":
                    last = max(last or 0, r["peak_mib"])
    print(f"reducer peak RSS {last} MiB")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
