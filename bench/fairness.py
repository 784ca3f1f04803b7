"""Fair share and overload: a small render next to a big one, on the local stack and in
the simulator.

1. Local stack (2 render workers answering 429 when busy, farm-wide admission of 2):
   user B's 4-task render alone on the idle farm, then user A's 256-task render alone,
   then A's again with B's submitted while it runs. Prints B's latency against B's
   latency on the idle farm (target ≤ 2×) and A's slowdown.
2. Simulator (``bench/scale_sim.py``: the real handlers over the twins, simulated time):
   1,000 workers, 100 users: A's 256 tasks among 98 users' backlogs of 64 tasks (the
   farm is full), and user B, whose 4 tasks come a minute later; B alone on the same
   farm for the baseline; with fair share, and without farm admission (everything
   published at once, served in arrival order); A's slowdown against the same run
   without B.
3. Simulator, overload: 10× the farm at once from 100 users, the render service
   refusing pushes (429) when every instance is busy, each refusal a delivery attempt;
   with and without farm admission: every execution must end done.

    .venv/bin/python bench/fairness.py [--skip-stack] [--skip-sim]
                                       [--skip-fairness-sim] [--skip-overload-sim]

The last line is ``B latency ratio R``: the local stack's figure, or the simulator's
when the stack is skipped.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import tempfile
import time
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from scale_sim import Submission, report, simulate  # noqa: E402

from francine.domain import planning  # noqa: E402

SCENE = {"width": 64, "height": 64, "nao_samples": 8}  # one task: about 0.2 s here
A_TASKS, B_TASKS, WORKERS = 256, 4, 2


# --- the local stack --------------------------------------------------------------------

def latency(store, sid: str, eid: str) -> float:
    """Seconds from the execution's creation to its end, by the store's own times
    (its document is read every 0.1 s: a status read through the api would cost the
    shared machine six aggregation queries each time)."""
    while not (ex := store.execution(sid, eid)).final:
        time.sleep(0.1)
    if ex.status != "done":
        raise SystemExit(f"execution {eid} ended {ex.status}: {ex.error}")
    return (ex.finished - ex.created).total_seconds()


def timed_render(client, store, sid: str, parallel: int) -> tuple[str, float]:
    eid = client.execute(sid, parallel=parallel, tile=SCENE["width"])["id"]
    return eid, latency(store, sid, eid)


def local_stack(farm_slots: int, refuse_when_busy: bool) -> dict:
    from francine.base.config import Settings
    from francine.tools.client import Client
    from francine.tools.local.processes import environment
    from francine.tools.local.stack import Stack, StackOptions, create_user_in
    from francine.tools.wiring import make_adapters

    state = pathlib.Path(tempfile.mkdtemp(prefix="francine-fairness-"))
    options = StackOptions(workers=WORKERS, farm_slots=farm_slots,
                           refuse_when_busy=refuse_when_busy,
                           state_dir=state, extra_env={"FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as stack:
        with environment(stack.info["env"]):
            store = make_adapters(Settings.from_env()).store

        def user(name: str):
            key = create_user_in(stack.info["env"], stack.info["project"],
                                 f"{name}-{uuid.uuid4().hex[:6]}")
            client = Client(stack.info["api_url"], key)
            return client, client.create_session("ao", SCENE)["id"]

        (a, a_sid), (b, b_sid) = user("a"), user("b")
        timed_render(b, store, b_sid, B_TASKS)  # warm: numba's kernels, the caches
        # The machine is shared: B's renders alone before and after, and three while A
        # runs; the ratio is of the medians.
        b_idle = [timed_render(b, store, b_sid, B_TASKS)[1] for _ in range(3)]
        _, a_alone = timed_render(a, store, a_sid, A_TASKS)
        print(f"A alone: {a_alone:.1f} s", flush=True)

        a_eid = a.execute(a_sid, parallel=A_TASKS, tile=SCENE["width"])["id"]
        while store.count_tasks(a_sid, a_eid, "done") < A_TASKS // 8:  # A is running
            time.sleep(0.2)
        b_busy = []
        for _ in range(3):
            b_busy.append(timed_render(b, store, b_sid, B_TASKS)[1])
            if store.execution(a_sid, a_eid).final:
                print("warning: A ended before B's renders did", flush=True)
        a_shared = latency(store, a_sid, a_eid)
        b_idle += [timed_render(b, store, b_sid, B_TASKS)[1] for _ in range(2)]
    print(f"B alone: {', '.join(f'{t:.2f}' for t in b_idle)} s; while A runs: "
          f"{', '.join(f'{t:.2f}' for t in b_busy)} s", flush=True)
    b_base, b_shared = statistics.median(b_idle), statistics.median(b_busy)
    return {"b_idle": b_base, "b_busy": b_shared, "ratio": b_shared / b_base,
            "a_alone": a_alone, "a_shared": a_shared}


# --- the simulator ----------------------------------------------------------------------

def makespan_of(run: dict, user: str) -> float:
    (r,) = [r for r in run["results"] if r["user"] == user]
    return r["makespan"]


def b_latency(run: dict, at: float) -> float:
    (b,) = [r for r in run["results"] if r["submitted"] == at]
    return b["makespan"]


def simulated_fairness(workers: int, users: int, seed: int) -> dict:
    """The local stack's scenario on a farm of ``workers``: user A's 256-task render
    runs among ``users - 2`` others (a backlog of 64 tasks each, so that the farm is
    full) when user B submits 4 tasks, a minute later."""
    b_at, pass_s, backlog = 60.0, 30.0, 64
    crowd = [Submission(0.0, f"u{u}", 32, 32, backlog, pass_s) for u in range(users - 2)]
    a = Submission(0.0, "a", 32, 32, A_TASKS, pass_s)
    b = Submission(b_at, "b", 32, 32, B_TASKS, pass_s)
    farm = {"farm_slots": workers}
    figures = {}
    # B alone: cold starts and task times vary, so the mean of a few seeds
    figures["idle"] = statistics.mean(
        b_latency(simulate([b], workers, s, settings_options=farm), b_at)
        for s in range(seed, seed + 5))
    figures["a without b"] = makespan_of(
        simulate([*crowd, a], workers, seed, settings_options=farm), "a")
    for name, options in (("fair share", farm), ("no admission", {})):
        run = simulate([*crowd, a, b], workers, seed, settings_options=options)
        report(f"fairness, {name}: A's {A_TASKS} tasks of {pass_s:.0f} s among "
               f"{users - 2} users × {backlog}, and B's {B_TASKS} a minute later, "
               f"{workers} workers", run, workers)
        figures[name] = b_latency(run, b_at)
        figures[f"{name} a"] = makespan_of(run, "a")
        others = [r["makespan"] for r in run["results"] if r["submitted"] != b_at]
        figures[f"{name} crowd"] = statistics.median(others)
    return figures


def simulated_overload(workers: int, users: int, seed: int) -> dict:
    per_user = 10 * workers // users  # together: ten times the farm
    subs = [Submission(u * 0.1, f"u{u}", 32, 32, per_user, 20.0) for u in range(users)]
    refusing = {"refuse_when_full": True}
    outcome = {}
    for name, options in (("farm admission", {"farm_slots": workers}), ("no admission", {})):
        run = simulate(subs, workers, seed, platform_options=refusing,
                       settings_options=options, watchdog_s=60.0)
        report(f"overload, {name}: {users} users × {per_user} tasks = 10× the farm, "
               f"{workers} workers refusing when full", run, workers)
        done = sum(r["status"] == "done" for r in run["results"])
        outcome[name] = (done, len(run["results"]), run["stats"]["redeliveries"],
                         run["stats"]["dead_letters"], run["stats"]["speculated"])
    return outcome


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--skip-stack", action="store_true")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-fairness-sim", action="store_true")
    ap.add_argument("--skip-overload-sim", action="store_true")
    ap.add_argument("--farm-slots", type=int, default=2 * WORKERS,
                    help="the local stack's farm admission (default: as francine stack up)")
    ap.add_argument("--refuse-when-busy", action="store_true",
                    help="the local stack's workers answer 429 while they render")
    ap.add_argument("--sim-workers", type=int, default=1000)
    ap.add_argument("--sim-users", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    planning.MAX_PARALLEL = max(planning.MAX_PARALLEL, A_TASKS)
    fair = None
    if not (args.skip_sim or args.skip_fairness_sim):
        fair = simulated_fairness(args.sim_workers, args.sim_users, args.seed)
        print(f"\nsimulator, {args.sim_workers} workers, {args.sim_users} users: B's latency "
              f"idle {fair['idle']:.1f} s; with fair share {fair['fair share']:.1f} s "
              f"({fair['fair share'] / fair['idle']:.2f}×); without admission "
              f"{fair['no admission']:.1f} s ({fair['no admission'] / fair['idle']:.2f}×); "
              f"the others' median latency {fair['fair share crowd']:.0f} s with fair share, "
              f"{fair['no admission crowd']:.0f} s without; A's slowdown with fair share "
              f"{fair['fair share a'] / fair['a without b']:.3f}× "
              f"({fair['a without b']:.1f} → {fair['fair share a']:.1f} s)")
    if not (args.skip_sim or args.skip_overload_sim):
        over = simulated_overload(args.sim_workers, args.sim_users, args.seed)
        for name, (done, total, refused, dead, copies) in over.items():
            print(f"simulator overload, {name}: {done} / {total} executions done, "
                  f"{refused} deliveries refused or failed, {dead} dead-lettered, "
                  f"{copies} speculative copies (published outside the farm's queue)")
    if not args.skip_stack:
        figures = local_stack(args.farm_slots, args.refuse_when_busy)
        print(f"\nlocal stack, {WORKERS} workers: B ({B_TASKS} tasks, median) idle "
              f"{figures['b_idle']:.2f} s, while A's {A_TASKS} tasks run "
              f"{figures['b_busy']:.2f} s; A alone {figures['a_alone']:.1f} s, with B "
              f"{figures['a_shared']:.1f} s (slowdown "
              f"{figures['a_shared'] / figures['a_alone']:.3f}×)")
        ratio = figures["ratio"]
    elif fair is not None:
        print("\n(the local stack skipped: the ratio below is the simulator's)")
        ratio = fair["fair share"] / fair["idle"]
    else:
        return
    print(f"B latency ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
