"""The reducer: on every task event, decide whether a reduction group is complete and,
if this invocation wins the claim, reduce it; the root also encodes the final image.

No hot spot: the decision counts the finished children of one parent (an aggregation
query over task documents), and the claim is a conditional write on the parent's own
task document. After reducing a node the same invocation goes on to the node's parent,
so one event can carry the tree up to the root.

Dead-lettered messages (a task that failed all its delivery attempts) end the
execution as ``failed`` with the reason, so that nothing waits forever.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from francine import events, executions, imaging, planning, producers
from francine.adapters.bus import EXECUTION_STATUS, PRODUCE, TASK_DONE
from francine.adapters.store import now
from francine.clients import Adapters
from francine.envelope import Message, require

log = logging.getLogger("francine.reducer")

#: A claim older than this is presumed dead (its holder was killed without a retry).
CLAIM_LEASE_S = 900.0
#: Concurrent downloads of a reduction's inputs.
FETCHERS = 8


class Reducer:
    def __init__(self, adapters: Adapters):
        self.ad = adapters

    def handle(self, message: Message) -> str:
        if message.dead_lettered:
            return self.dead_letter(message)
        if message.type == EXECUTION_STATUS:
            return events.notify(self.ad, message)
        if message.type != TASK_DONE:
            return f"ignored: message of type {message.type!r}"
        sid, eid, node = require(message.payload, "session_id", "execution_id", "node")
        doc = self.ad.store.get_execution(sid, eid)
        if doc is None or doc["status"] in executions.FINAL:
            return "skipped: execution gone or ended"
        shape = planning.Shape.from_dict(doc["shape"])
        try:
            planning.parse_node(node)
        except ValueError:
            return f"ignored: bad node {node!r}"
        return self.advance(doc, shape, node, owner=message.id or node)

    def advance(self, doc: dict, shape: planning.Shape, node: str, owner: str) -> str:
        sid, eid = doc["session_id"], doc["id"]
        reduced = []
        while True:
            up = planning.parent(shape, node)
            if up is None:
                break
            done = self.ad.store.count_done_children(sid, eid, up)
            actions = planning.on_done(shape, node, done, doc.get("admission_limit", 0))
            admits = [a.index for a in actions if isinstance(a, planning.Admit)]
            if admits:
                self.ad.bus.publish_tasks(sid, eid, [
                    (i, planning.task_id(eid, planning.node_name(0, i))) for i in admits])
            if not any(isinstance(a, planning.Reduce) for a in actions):
                break
            state, _ = self.ad.store.claim_task(
                sid, eid, planning.task_id(eid, up), owner, CLAIM_LEASE_S, kind="reduce")
            if state in ("held", "other"):
                break  # another invocation reduces it and will carry on from there
            if state == "won":
                self.reduce(doc, shape, up)
                reduced.append(up)
            elif up == shape.root:
                # The image is stored but whoever stored it may have died before ending
                # the execution: end it (first caller wins, so this is harmless).
                self.end(doc)
            node = up  # "done": reduced earlier, perhaps by a try of ours that died after
        return f"reduced {reduced}" if reduced else "waiting for siblings"

    def reduce(self, doc: dict, shape: planning.Shape, node: str) -> None:
        sid, eid = doc["session_id"], doc["id"]
        cpu0, t0 = time.process_time(), time.perf_counter()
        # The ~√N children are fetched concurrently: this is on the critical path from
        # the last task to the image, and each object is a round trip.
        kids = planning.children(shape, node)
        with ThreadPoolExecutor(max_workers=min(FETCHERS, len(kids))) as pool:
            blobs = list(pool.map(lambda c: self.ad.blobs.get_partial(sid, eid, c), kids))
        fetch_s = time.perf_counter() - t0
        combined = imaging.combine(imaging.load_partial(b) for b in blobs)
        del blobs
        root = node == shape.root
        if root:
            final = producers.final_image(doc["producer"], doc["scene"], combined.mean())
            image = imaging.encode(final, doc["format"], doc["display"])
            self.ad.blobs.put_result(self.result_name(doc), image,
                                     imaging.FORMATS[doc["format"]])
        else:
            self.ad.blobs.put_partial(sid, eid, node, imaging.dump_partial(combined))
        self.ad.store.update_task(sid, eid, planning.task_id(eid, node), {
            "status": "done", "finished": now(), "fetch_s": fetch_s,
            "work_s": time.perf_counter() - t0 - fetch_s, "cpu_s": time.process_time() - cpu0})
        if root:
            self.end(doc)

    def result_name(self, doc: dict) -> str:
        return self.ad.blobs.result_name(doc["session_id"], doc["id"],
                                         imaging.EXTENSIONS[doc["format"]])

    def end(self, doc: dict) -> None:
        if executions.end(self.ad, doc, "done", result=self.result_name(doc)):
            log.info("execution %s/%s done", doc["session_id"], doc["id"])

    def dead_letter(self, message: Message) -> str:
        payload = message.payload
        sid, eid = payload.get("session_id"), payload.get("execution_id")
        if not (isinstance(sid, str) and isinstance(eid, str)):
            return "ignored: dead letter without execution"
        attempts = message.delivery_attempts
        if message.type == PRODUCE and isinstance(payload.get("task_id"), str):
            task = self.ad.store.get_task(sid, eid, payload["task_id"])
            if task is not None and task["status"] == "done":
                return "ignored: the task is done (its acknowledgement was lost)"
            if task is not None:
                self.ad.store.update_task(sid, eid, payload["task_id"], {
                    "status": "failed", "error": f"undeliverable after {attempts} attempts"})
            what = f"production task {task['node'] if task else payload['task_id']}"
        else:
            what = f"reduction after task {payload.get('node')}"
        ended = executions.fail(self.ad, sid, eid, "task_failed",
                                f"{what} failed after {attempts} delivery attempts")
        return "failed execution" if ended else "execution already ended"
