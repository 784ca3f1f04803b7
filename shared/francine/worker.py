"""The render worker: one production task per Pub/Sub push request.

Idempotent: a task found done is announced again (its event may have been lost) and
not rendered again; a task delivered twice while running renders at most once more and
writes the same bytes to the same object.
"""

from __future__ import annotations

import logging
import os
import pathlib
import tempfile
import time

from francine import errors, executions, imaging, planning, producers
from francine.adapters.store import now
from francine.clients import Adapters
from francine.envelope import Message, require
from francine.producers.base import ResourceInfo, Resources, Tile

log = logging.getLogger("francine.worker")


class Worker:
    def __init__(self, adapters: Adapters):
        self.ad = adapters
        self.cache_dir = pathlib.Path(adapters.settings.cache_dir)
        # Lives as long as the instance: parsed meshes, acceleration structures.
        self.memo: dict = {}

    def fetch(self, info: ResourceInfo) -> pathlib.Path:
        """A local copy of a resource, downloaded once per instance (by content hash)."""
        path = self.cache_dir / info.sha256
        if not path.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".part-")
            os.close(fd)
            try:
                self.ad.blobs.fetch_resource(info.sha256, pathlib.Path(tmp))
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return path

    def handle(self, message: Message) -> str:
        """Render the task of ``message``; returns what happened (for logs and tests)."""
        sid, eid, tid = require(message.payload, "session_id", "execution_id", "task_id")
        t_fetch = time.perf_counter()
        doc = self.ad.store.get_execution(sid, eid)
        if doc is None or doc["status"] in executions.FINAL:
            return "skipped: execution gone or ended"
        try:
            # A conditional write: a task that another delivery finished in the meantime
            # is never set back to running. A running one is rendered again (its holder
            # may be dead; the same bytes land on the same object).
            state, task = self.ad.store.claim_task(sid, eid, tid, owner=message.id,
                                                   lease_s=0.0, kind="produce")
        except errors.NotFound:
            return "skipped: no such task"
        if state == "done":
            if task["status"] == "done":
                self.ad.bus.publish_done(sid, eid, task["node"])
                return "announced again: already done"
            return "skipped: task failed"
        if state == "held":
            return "skipped: another delivery took it this instant"
        if state == "other":
            return "skipped: not a production task"
        shape = planning.Shape.from_dict(doc["shape"])
        fetch_s = time.perf_counter() - t_fetch

        fetched = 0.0

        def timed_fetch(info: ResourceInfo) -> pathlib.Path:
            nonlocal fetched
            t = time.perf_counter()
            try:
                return self.fetch(info)
            finally:
                fetched += time.perf_counter() - t

        infos = {n: ResourceInfo(n, r["sha256"], r["size"]) for n, r in doc["resources"].items()}
        resources = Resources(infos, timed_fetch, self.memo)
        tile = Tile(*task["tile"])
        cpu0, t0 = time.process_time(), time.perf_counter()
        try:
            pixels = producers.get(doc["producer"]).render(
                doc["scene"], tile, int(task["seed"]), resources)
            partial = imaging.from_pass(tile, shape.tile, pixels)
        except ValueError as e:  # SceneError is one
            # The scene was validated when the execution was created: this cannot get
            # better by retrying. Record it and let the execution fail with the reason.
            self.ad.store.update_task(sid, eid, tid, {"status": "failed", "error": str(e)})
            executions.fail(self.ad, sid, eid, "render_failed",
                            f"task {task['node']} failed: {e}")
            raise errors.PermanentError(str(e)) from e
        work_s = time.perf_counter() - t0 - fetched
        cpu_s = time.process_time() - cpu0
        t_up = time.perf_counter()
        self.ad.blobs.put_partial(sid, eid, task["node"], imaging.dump_partial(partial))
        self.ad.store.update_task(sid, eid, tid, {
            "status": "done", "finished": now(), "fetch_s": fetch_s + fetched,
            "work_s": work_s + (time.perf_counter() - t_up), "cpu_s": cpu_s})
        self.ad.bus.publish_done(sid, eid, task["node"])
        log.info("rendered %s/%s/%s in %.3f s", sid, eid, task["node"], work_s)
        return "rendered"
