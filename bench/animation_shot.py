"""An animation on the local stack: when its first frame exists against the whole shot,
and its preview video.

    .venv/bin/python bench/animation_shot.py [--frames 4] [--parallel 4] [--samples 8]

Starts a local stack (2 workers), builds a Blender shot with ``bpy`` (64×48, a sphere
moving over the frames, a texture), uploads it and renders the frame range as one
execution. Prints, for each frame, when its image was stored (seconds after the
request), the time to the first frame against the time to the whole shot, and the
preview video's size, frame count and duration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import sys
import tempfile
import time


def seconds(t: str, since: str) -> float:
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(t) - parse(since)).total_seconds()


def main() -> int:
    from francine.producers.blender import examples
    from francine.services import video
    from francine.tools.client import Client
    from francine.tools.local.stack import Stack, StackOptions

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        examples.checker_png(root / "maps" / "checker.png")
        examples.build(root / "shot.blend", 64, 48, texture="maps/checker.png",
                       frames=args.frames)
        with Stack(StackOptions(workers=2, state_dir=root / "state")) as stack:
            client = Client(stack.info["api_url"], stack.info["api_key"])
            sid = client.create_session("blender", {"blend": "shot.blend",
                                                    "samples": args.samples})["id"]
            client.put_resource(sid, "shot.blend", (root / "shot.blend").read_bytes())
            client.put_resource(sid, "maps/checker.png",
                                (root / "maps" / "checker.png").read_bytes())
            t0 = time.perf_counter()
            e = client.execute(sid, parallel=args.parallel, frames=f"1-{args.frames}")
            status = client.wait(sid, e["id"], timeout_s=900, poll_s=0.1)
            wall = time.perf_counter() - t0
            created = status["time"]["created"]
            frames = client.frames(sid, e["id"])
            data = client.video(sid, e["id"])
    done = {f["frame"]: seconds(f["finished"], created) for f in frames if f.get("finished")}
    for frame, at in sorted(done.items()):
        print(f"frame {frame:4d}  image after {at:6.2f} s")
    whole = seconds(status["time"]["finished"], created)
    first = min(done.values())
    print(f"{args.frames} frames × {args.parallel} passes × {args.samples} samples, "
          f"{status['frames']['window']} frames at once, status {status['status']}")
    print(f"first frame {first:.2f} s, whole shot {whole:.2f} s (wall {wall:.2f} s): "
          f"first/whole {first / whole:.2f}")
    probe = video.probe(data)
    print(f"video: {len(data)} bytes, {probe['frames']} frames of {probe['size'][0]}×"
          f"{probe['size'][1]} at {probe['fps']} fps, {probe['duration']} s, "
          f"{probe['codec']} {probe['pix_fmt']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
