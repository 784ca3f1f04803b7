"""The pipeline's own overhead on the local stack, cold and warm.

    .venv/bin/python bench/pipeline_latency.py [--runs N]

Starts a local stack (2 workers) and runs the same small execution (64×64 aobench,
2×2 AO rays, parallel 8: 8 production tasks, 4 reductions) N times. The first run meets
cold workers (imports, clients, numba kernels loaded from their cache); the others are
warm. For each run it prints the POST's latency and the execution's own figures: wall
time from request to stored image, request → first task running, last production task
→ final image, and the seconds summed over tasks. Then the medians of the warm runs.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time


def main() -> int:
    from francine.tools.client import Client
    from francine.tools.local.stack import Stack, StackOptions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as state, \
            Stack(StackOptions(workers=2, state_dir=pathlib.Path(state))) as stack:
        client = Client(stack.info["api_url"], stack.info["api_key"])
        sid = client.create_session("ao", {"width": 64, "height": 64, "nao_samples": 2})["id"]
        for run in range(args.runs):
            t = time.perf_counter()
            eid = client.execute(sid, parallel=8)["id"]
            post = time.perf_counter() - t
            st = client.wait(sid, eid, poll_s=0.05)
            tm = st["time"]
            row = (post, tm["total"], tm["first_task_after"], tm["image_after_last_task"],
                   tm["fetching"], tm["producing"], tm["reducing"])
            rows.append(row)
            print(f"{'cold' if run == 0 else 'warm'}  POST {post * 1000:5.0f} ms  total "
                  f"{row[1]:.3f} s  first task after {row[2]:.3f} s  image after last task "
                  f"{row[3]:.3f} s  (summed: fetching {row[4]:.3f}, producing {row[5]:.3f}, "
                  f"reducing {row[6]:.3f})")
    warm = rows[1:]
    if warm:
        med = [statistics.median(r[i] for r in warm) for i in range(4)]
        print(f"warm medians: POST {med[0] * 1000:.0f} ms, total {med[1]:.3f} s, first task "
              f"after {med[2]:.3f} s, image after last task {med[3]:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
