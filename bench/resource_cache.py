"""What a warm render worker saves: the first and the second task of a bunny session on
one worker, through the local stack (issue 4's `fetching` figure).

    .venv/bin/python bench/resource_cache.py

Starts a local stack with one worker, uploads the Stanford Bunny (data/bunny.obj in the
folder beside the checkout) as a session resource, and runs two executions of one small
task each. For each task it prints the seconds the worker spent fetching (execution and
task documents, and the mesh, unless its instance has it already) and producing (BVH
build, unless cached, and rendering), as recorded in the task documents.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNNY = ROOT.parent / "shared" / "data" / "bunny.obj"
SCENE = ROOT / "shared" / "francine" / "producers" / "pathtracer" / "examples" / "bunny.json"


def main() -> int:
    from francine.adapters.store import Store
    from francine.domain import planning
    from francine.tools.client import Client
    from francine.tools.local.processes import environment
    from francine.tools.local.stack import Stack, StackOptions

    if not BUNNY.exists():
        sys.exit(f"{BUNNY} not found")
    scene = {**json.loads(SCENE.read_text()), "width": 64, "height": 48,
             "samples_per_pixel": 1}
    with tempfile.TemporaryDirectory() as state, \
            Stack(StackOptions(workers=1, state_dir=pathlib.Path(state))) as stack:
        client = Client(stack.info["api_url"], stack.info["api_key"])
        sid = client.create_session("pathtracer", scene)["id"]
        client.put_resource(sid, "bunny.obj", BUNNY.read_bytes())
        with environment(stack.info["env"]):
            from google.cloud import firestore

            store = Store(firestore.Client(project=stack.info["project"]))
            for label in ("first task (cold worker)", "second task (warm worker)"):
                eid = client.execute(sid, parallel=1)["id"]
                status = client.wait(sid, eid, timeout_s=300)
                assert status["status"] == "done", status
                task = store.get_task(sid, eid, planning.task_id(eid, "p0"))
                print(f"{label:28s} fetching {task['fetch_s']:7.3f} s   producing "
                      f"{task['work_s']:7.3f} s   (execution: fetching "
                      f"{status['time']['fetching']:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
