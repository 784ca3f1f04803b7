"""Watching a render: camera move → first preview, and what watching costs the render.

    .venv/bin/python bench/preview_latency.py [--runs N] [--parallel P] [--tile T]

Starts a local stack (2 workers) and an `ao` session at 512×512 (the default scene), then
does what the viewer does, with the viewer's defaults (8 passes, 128-pixel tiles):

1. **Camera move → first preview.** N times: POST an execution whose `update` moves the
   world (an orbit step, as the viewer sends for `ao`), follow its event stream, and at
   the first event with a finished task GET the preview; the figure is the wall time
   from the POST to the preview's bytes. Each render then runs to its end.
2. **The preview's cost on the critical path.** Renders of three kinds, N each, in
   rotating order: unwatched; followed by the event stream only; watched like the viewer
   does (event stream, a preview asked for on every change). The figure is each render's
   own wall time (request → final image stored, from its status) and the ratios of the
   medians to the unwatched one. The preview is built in
   the api from what the pipeline stores anyway, so the workers and the reducer do the
   same work either way: what remains is the api and the emulators sharing the CPUs.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import tempfile
import threading
import time


def orbit(step: int) -> dict:
    """The viewer's `ao` update for a yaw of 0.05 rad per step about (-0.5, 0, -3)."""
    a = 0.05 * step
    c, s = math.cos(a), math.sin(a)
    spheres = []
    for x, y, z in ((-2.0, 0.0, -3.5), (-0.5, 0.0, -3.0), (1.0, 0.0, -2.2)):
        dx, dz = x + 0.5, z + 3.0
        spheres.append({"center": [round(c * dx - s * dz - 0.5, 5), y,
                                   round(s * dx + c * dz - 3.0, 5)], "radius": 0.5})
    return {"spheres": spheres}


def first_preview(client, sid: str, body: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    eid = client.request("POST", f"/v1/sessions/{sid}/executions", json=body).json()["id"]
    for status in client.events(sid, eid):
        if status["tasks"]["done"] > 0:
            client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/preview")
            return time.perf_counter() - t0, eid
    raise RuntimeError(f"execution {eid} ended without a finished task")


def watch(client, sid: str, eid: str, counts: list[int], previews: bool) -> None:
    """The viewer's loop: a preview on every change of the finished task count."""
    done = -1
    for status in client.events(sid, eid):
        if previews and status["tasks"]["done"] != done:
            done = status["tasks"]["done"]
            if done:
                client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/preview")
                counts[0] += 1


def timed_render(client, sid: str, body: dict, kind: str, counts: list[int]) -> float:
    eid = client.execute(sid, **body)["id"]
    viewer = None
    if kind != "unwatched":
        viewer = threading.Thread(target=watch,
                                  args=(client, sid, eid, counts, kind == "previews"))
        viewer.start()
    total = client.wait(sid, eid, poll_s=0.2)["time"]["total"]
    if viewer:
        viewer.join()
    return total


def main() -> int:
    from francine.tools.client import Client
    from francine.tools.local.stack import Stack, StackOptions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--tile", type=int, default=128)
    args = parser.parse_args()
    body = {"parallel": args.parallel, "tile": args.tile}
    with tempfile.TemporaryDirectory() as state, \
            Stack(StackOptions(workers=2, state_dir=pathlib.Path(state))) as stack:
        client = Client(stack.info["api_url"], stack.info["api_key"])
        sid = client.create_session("ao")["id"]
        client.wait(sid, client.execute(sid, **body)["id"])  # warm the workers

        moves = []
        for run in range(args.runs):
            latency, eid = first_preview(client, sid, {**body, "update": orbit(run + 1)})
            final = client.wait(sid, eid, poll_s=0.05)["time"]["total"]
            moves.append(latency)
            print(f"move {run + 1}: first preview after {latency * 1000:.0f} ms "
                  f"(final image after {final:.2f} s)", flush=True)

        kinds = ["unwatched", "events", "previews"]
        times: dict[str, list[float]] = {k: [] for k in kinds}
        previews = [0]
        for run in range(args.runs):
            order = kinds[run % 3:] + kinds[:run % 3]
            for kind in order:
                times[kind].append(timed_render(client, sid, body, kind, previews))
            print(f"round {run + 1}: " + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in order),
                  flush=True)
    tasks = math.ceil(512 / args.tile) ** 2 * args.parallel
    print(f"\nao 512×512, {args.parallel} passes, tile {args.tile} ({tasks} production tasks), "
          "2 workers")
    print(f"camera move → first preview: median {statistics.median(moves) * 1000:.0f} ms "
          f"(min {min(moves) * 1000:.0f}, max {max(moves) * 1000:.0f})")
    base = statistics.median(times["unwatched"])
    print(f"render wall time, medians: unwatched {base:.2f} s, " + ", ".join(
        f"{k} {statistics.median(times[k]):.2f} s (×{statistics.median(times[k]) / base:.3f})"
        for k in kinds[1:]) + f"; {previews[0]} previews asked for")
    return 0


if __name__ == "__main__":
    sys.exit(main())
