"""A task's claim on the Firestore emulator, against the client library's transaction.

    .venv/bin/python bench/claims.py [--n 200]

Starts the emulators (``francine.tools.local.emulators``) and measures, in one run:

  (a) a production task's claim, one at a time: ``Store.claim_task`` (a transaction
      begun by its read: two round trips) against the same decision in the client's
      ``@firestore.transactional`` (BeginTransaction, then the read, then Commit);
  (b) two reducers claiming one reduction at once (as two children ending together
      make them do): ``Store.claim_task`` (a write conditional on its read) against the
      client's transaction, where each read takes a lock the other's write waits for.

Prints the median and the 90th percentile of each, and their ratios. The box's load
average at the start is printed with them (the emulator shares the machine).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import threading
import time


def percentiles(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[int(len(xs) * 0.9)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="claims of (a); (b) makes n/10 pairs")
    args = parser.parse_args()
    from francine.tools.local.emulators import Emulators

    emulators = Emulators()
    os.environ.update(emulators.start())
    try:
        return measure(args.n)
    finally:
        emulators.stop()


def measure(n: int) -> int:
    from google.cloud import firestore

    from francine.adapters.store import Store
    from francine.domain import planning
    from francine.domain.records import Execution, Kind, Session, Status
    from francine.services.scheduling import task_records

    db = firestore.Client(project=os.environ["GOOGLE_CLOUD_PROJECT"])
    store = Store(db)
    store.create_session(Session("s", "u", "ao", "png", {"width": 16}))
    shape = planning.make_shape(16 * n, 16, 1, 16)
    ex, _ = store.create_execution("s", "e", lambda session: ({}, Execution(
        id="e", session_id="s", user="u", created=datetime.datetime.now(datetime.UTC),
        producer="ao", format="png", display="linear", channels=1, scene={"width": 16},
        shape=shape.to_dict(), parallel=1)))
    tasks = task_records(ex.id, shape)
    store.write_tasks("s", ex.id, tasks)
    produce = [t for t in tasks if t.kind == Kind.PRODUCE]
    reduce = [t for t in tasks if t.kind == Kind.REDUCE]
    ex_ref = db.collection("sessions").document("s").collection("executions").document(ex.id)

    @firestore.transactional
    def client_claim(tx, tid: str, owner: str) -> None:
        """The same decision, in the client library's transaction (three round trips)."""
        ref = ex_ref.collection("tasks").document(tid)
        snaps = {s.reference.path: s for s in tx.get_all([ex_ref, ref])}
        if snaps[ex_ref.path].to_dict().get("status") in ("done", "failed", "cancelled"):
            return
        task = snaps[ref.path].to_dict()
        if task["status"] == Status.PENDING:
            tx.update(ref, {"status": "running", "owner": owner,
                            "attempts": task.get("attempts", 0) + 1})

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.1f}")
    half = len(produce) // 2
    for a, b in zip(produce[:10], produce[half:half + 10], strict=True):  # warm both
        store.claim_task("s", ex.id, a.id, "warm", 0.0)
        client_claim(db.transaction(), b.id, "warm")
    ours, theirs = [], []
    for a, b in zip(produce[10:half], produce[half + 10:], strict=False):  # interleaved
        ours.append(timed(lambda t=a: store.claim_task("s", ex.id, t.id, "w", 0.0)))
        theirs.append(timed(lambda t=b: client_claim(db.transaction(), t.id, "w")))
    (om, op), (tm, tp) = percentiles(ours), percentiles(theirs)
    print(f"(a) one claim at a time, {len(ours)} and {len(theirs)} claims")
    print(f"    Store.claim_task (2 round trips)        median {om * 1000:6.2f} ms, "
          f"p90 {op * 1000:6.2f} ms")
    print(f"    the client's transaction (3)            median {tm * 1000:6.2f} ms, "
          f"p90 {tp * 1000:6.2f} ms")
    print(f"    ratio (ours / the client's)             median {om / tm:.2f}, p90 {op / tp:.2f}")

    def pair(claim) -> float:
        """Two claimants at once; the time until both have an answer."""
        barrier, ends = threading.Barrier(2), []

        def one(owner: str) -> None:
            barrier.wait()
            t = time.perf_counter()
            claim(owner)
            ends.append(time.perf_counter() - t)

        threads = [threading.Thread(target=one, args=(f"r{k}",)) for k in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return max(ends)

    pairs = max(2, min(len(reduce) // 2, n // 10))
    ours = [pair(lambda o, t=t: store.claim_task("s", ex.id, t.id, o, 600.0, kind=Kind.REDUCE))
            for t in reduce[:pairs]]
    theirs = [pair(lambda o, t=t: client_claim(db.transaction(max_attempts=10), t.id, o))
              for t in reduce[pairs:2 * pairs]]
    (om, op), (tm, tp) = percentiles(ours), percentiles(theirs)
    print(f"(b) two reducers claiming one reduction at once, {pairs} pairs each")
    print(f"    Store.claim_task (conditional write)    median {om * 1000:8.1f} ms, "
          f"p90 {op * 1000:8.1f} ms")
    print(f"    the client's transaction                median {tm * 1000:8.1f} ms, "
          f"p90 {tp * 1000:8.1f} ms")
    print(f"    ratio (ours / the client's)             median {om / tm:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
