"""The scheduler's state machine, fed events: specific transitions compared with the
expected actions, then property tests in which hypothesis delivers the messages in any
order, duplicated, dropped and redelivered, kills invocations after their claims, and
publishes task events for tasks that are not done (false claims, which the store does
not back)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from francine.domain import planning
from francine.domain.records import FINAL, Claim, Kind, Status
from francine.domain.scheduler import (
    ENDGAME_FACTOR,
    REDRIVE_LIMIT,
    REDUCE_LEASE_S,
    SPECULATE_FIRST_S,
    SPECULATE_MIN_S,
    STALLED_S,
    UNTAKEN_REDRIVE_LIMIT,
    Admit,
    Advance,
    Announce,
    ClaimTask,
    DeadLettered,
    End,
    ExecutionCreated,
    InputsLost,
    MarkFailed,
    Observed,
    PassFailed,
    Plan,
    Produce,
    Publish,
    Redrive,
    Reduce,
    Release,
    Replace,
    Reproduce,
    Requeue,
    Speculate,
    TaskClaimed,
    TaskDelivered,
    TaskDone,
    TaskFailed,
    TaskProduced,
    Tick,
    WriteTasks,
    budget,
    step,
)

RUNNING = Observed(status=Status.RUNNING, planned=True, published=True)
#: What a task's event observes of a task that is done, its output stored.
DONE = {"task_status": Status.DONE, "stored": True}


def plan_of(w=64, h=64, passes=4, tile=32, admission=0):
    return Plan(planning.make_shape(w, h, passes, tile), admission)


def test_creation_writes_the_tasks_then_publishes_the_first_ones():
    plan = plan_of(admission=3)
    assert step(plan, ExecutionCreated(), Observed()) == [WriteTasks(), Publish((0, 1, 2), True)]
    # a retried request resumes where the first stopped
    assert step(plan, ExecutionCreated(), Observed(planned=True)) == [Publish((0, 1, 2), True)]
    assert step(plan, ExecutionCreated(), RUNNING) == []


def test_a_tick_resumes_only_an_execution_stalled_before_publication():
    plan = plan_of()
    n = plan.shape.productions
    assert step(plan, Tick(), Observed(planned=True, now_s=STALLED_S - 1)) == []
    assert step(plan, Tick(), Observed(planned=True, now_s=STALLED_S)) == [
        Publish(tuple(range(n)), True)]
    assert step(plan, Tick(), Observed(planned=True, published=True, now_s=1e6)) == []


def test_a_delivery_claims_then_renders_or_announces_again():
    plan = plan_of()
    assert step(plan, TaskDelivered("p3", "m1"), RUNNING) == [
        ClaimTask("p3", Kind.PRODUCE, "m1", 0.0)]
    assert step(plan, TaskDelivered("r1.0", "m1"), RUNNING) == []  # not a production task
    assert step(plan, TaskClaimed("p3", Claim.WON), RUNNING) == [Produce("p3")]
    assert step(plan, TaskClaimed("p3", Claim.DONE), RUNNING) == [Announce("p3")]
    assert step(plan, TaskClaimed("p3", Claim.HELD), RUNNING) == []
    assert step(plan, TaskProduced("p3"), RUNNING) == [Announce("p3")]


def test_the_last_child_claims_the_parent_and_the_root_ends():
    plan = plan_of()  # 4 tiles × 4 passes: 16 productions, fan-in 4
    shape = plan.shape
    up = planning.parent(shape, "p5")
    size = len(planning.children(shape, up))
    assert step(plan, TaskDone("p5", "m"),
                Observed(status=Status.RUNNING, done_siblings=size - 1, **DONE)) == []
    seen = Observed(status=Status.RUNNING, done_siblings=size, **DONE)
    assert step(plan, TaskDone("p5", "m"), seen) == [
        ClaimTask(up, Kind.REDUCE, "m", REDUCE_LEASE_S)]
    assert step(plan, TaskClaimed(up, Claim.WON, "m"), seen) == [Reduce(up, "m")]
    assert step(plan, TaskClaimed(up, Claim.DONE, "m"), seen) == [Advance(up, "m")]
    root = dataclasses.replace(RUNNING, **DONE)
    assert step(plan, TaskDone(shape.root, "m"), root) == [End(Status.DONE)]


def test_a_task_event_is_a_claim_that_the_store_must_back():
    plan = plan_of()
    shape = plan.shape
    up = planning.parent(shape, "p5")
    full = len(planning.children(shape, up))
    # p5's event, its siblings all done: but p5 itself is pending or running (the
    # event was published early, or p5 was set back since): nothing is counted
    for status in (Status.PENDING, Status.RUNNING, Status.FAILED, None):
        seen = Observed(status=Status.RUNNING, done_siblings=full, task_status=status,
                        stored=True)
        assert step(plan, TaskDone("p5", "m"), seen) == []
    # the root's event before the image exists: the execution does not end
    assert step(plan, TaskDone(shape.root, "m"),
                dataclasses.replace(RUNNING, task_status=Status.RUNNING)) == []
    assert step(plan, TaskDone(shape.root, "m"),
                dataclasses.replace(RUNNING, task_status=Status.DONE)) == []  # not read
    # done, but its output is gone when its parent is to be reduced: produced again
    # (in the farm's queue, with farm admission: its slot was freed when it finished)
    lost = Observed(status=Status.RUNNING, done_siblings=full, task_status=Status.DONE,
                    stored=False)
    assert step(plan, TaskDone("p5", "m"), lost) == [Reproduce("p5")]
    assert step(dataclasses.replace(plan, farm=True), TaskDone("p5", "m"), lost) == [
        Reproduce("p5", queued=True)]
    assert step(plan, TaskDone(shape.root, "m"), dataclasses.replace(
        RUNNING, task_status=Status.DONE, stored=False)) == [Reproduce(shape.root)]
    # done, its group not complete: counted, its output not read (nothing uses it yet)
    counted = Observed(status=Status.RUNNING, done_siblings=1, task_status=Status.DONE)
    assert step(dataclasses.replace(plan, farm=True), TaskDone("p5", "m"), counted) == [
        Release("p5")]


def test_admission_control_admits_the_next_production_task():
    plan = plan_of(passes=8, admission=3)
    done = dataclasses.replace(RUNNING, **DONE)
    assert step(plan, TaskDone("p0", "m"), done) == [Publish((3,))]
    last = f"p{plan.shape.productions - 1}"
    assert not any(isinstance(a, Publish) for a in step(plan, TaskDone(last, "m"), done))


def test_farm_admission_is_the_schedulers_decision():
    plan = dataclasses.replace(plan_of(passes=8), farm=True)
    # planning queues the production tasks; the farm's free slots take the first
    assert step(plan, ExecutionCreated(), Observed()) == [WriteTasks(queued=True),
                                                          Admit(first=True)]
    assert step(plan, ExecutionCreated(), Observed(planned=True)) == [Admit(first=True)]
    # a finished production task frees its slot (a reduction holds none)
    done = dataclasses.replace(RUNNING, **DONE)
    assert step(plan, TaskDone("p0", "m"), done) == [Release("p0")]
    assert step(plan, TaskDone("r1.0", "m"), done) == []
    # ...but not on a false claim: the task is still running
    assert step(plan, TaskDone("p0", "m"), dataclasses.replace(
        RUNNING, task_status=Status.RUNNING, stored=True)) == []
    # refused deliveries: queued again; a tick with tasks waiting dispatches them
    pending = dataclasses.replace(RUNNING, task_status=Status.PENDING)
    assert step(plan, DeadLettered(Kind.PRODUCE, "p3", 5), pending) == [Requeue("p3")]
    assert step(plan, Tick(), dataclasses.replace(RUNNING, waiting=("p9",))) == [Admit()]
    assert step(plan, Tick(), RUNNING) == []
    # copies and lost outputs wait in the queue too
    lagging = dataclasses.replace(RUNNING, running=(("p1", SPECULATE_FIRST_S + 1, False),))
    assert step(plan, Tick(), lagging) == [Speculate("p1", 1, queued=True)]
    assert step(plan, InputsLost("r1.0", ("p1",)), RUNNING) == [
        Reproduce("r1.0"), Reproduce("p1", queued=True)]


def test_failures_and_dead_letters():
    plan = plan_of()  # 16 production tasks: a budget of 2 failed passes
    failed = step(plan, TaskFailed("p1", "bad scene"), RUNNING)
    assert failed[0] == MarkFailed("p1", "bad scene")
    assert failed[1].status == Status.FAILED and "p1" in failed[1].error["message"]
    done = Observed(status=Status.RUNNING, task_status=Status.DONE)
    assert step(plan, DeadLettered(Kind.PRODUCE, "p1", 5), done) == []
    # a worker that died on every delivery: the pass is replaced while within budget...
    running = Observed(status=Status.RUNNING, task_status=Status.RUNNING, generation=2,
                       attempts=3)
    assert step(plan, DeadLettered(Kind.PRODUCE, "p1", 5), running) == [
        Replace("p1", "undeliverable: every delivery that reached a render failed", 3)]
    # one delivery reached a render (its worker died), the others were refused for
    # capacity: produced again, never counted
    once = dataclasses.replace(running, attempts=1)
    assert step(plan, DeadLettered(Kind.PRODUCE, "p1", 5), once) == [Reproduce("p1")]
    # ...and fails the execution, naming the tasks, once it is spent
    spent = Observed(status=Status.RUNNING, task_status=Status.RUNNING, attempts=2,
                     failed=(("p7", 1, "boom"),))
    actions = step(plan, DeadLettered(Kind.PRODUCE, "p1", 5), spent)
    assert isinstance(actions[0], MarkFailed) and actions[1].error["code"] == "task_failed"
    message = actions[1].error["message"]
    assert "every delivery that reached a render failed" in message and "p7: boom" in message
    assert message.startswith("2 failures of 16 passes (the budget is 2)")


def test_a_failed_pass_is_replaced_until_the_budget_of_ten_percent_is_spent():
    plan = plan_of(w=64, h=64, passes=25, tile=32)  # 100 production tasks: budget 10
    assert budget(plan) == 10 and budget(plan_of(passes=1, tile=64)) == 1
    failed = tuple((f"p{i}", 1, "RuntimeError: boom") for i in range(8))
    seen = Observed(status=Status.RUNNING, failed=failed, generation=0)
    assert step(plan, PassFailed("p50", "boom"), seen) == [Replace("p50", "boom", 1)]
    # the same task failing again counts again
    seen = Observed(status=Status.RUNNING, failed=failed + (("p50", 1, "boom"),), generation=1)
    # ...but not a copy of the pass already replaced, failing after it (generation 0),
    # nor a render of a task that is done (its copy won) or failed for good
    assert step(plan, PassFailed("p50", "boom", 0), seen) == []
    for status in (Status.DONE, Status.FAILED):
        assert step(plan, PassFailed("p50", "boom", 1),
                    dataclasses.replace(seen, task_status=status)) == []
    actions = step(plan, PassFailed("p50", "boom", 1), seen)
    assert actions[0] == MarkFailed("p50", "boom")
    assert actions[1].status == Status.FAILED
    assert "10 failures of 100 passes (the budget is 10)" in actions[1].error["message"]
    assert "(and 4 more)" in actions[1].error["message"]
    # a single-task execution fails at its first failed pass
    single = plan_of(passes=1, tile=64)
    assert isinstance(step(single, PassFailed("p0", "boom"), RUNNING)[-1], End)


def test_the_budget_counts_passes_however_many_a_task_folds():
    # 20 passes of one tile folded into a single task: a budget of 2 failures, so its
    # first failure is replaced, not fatal
    folded = Plan(planning.make_shape(64, 64, 20, None, fold=20))
    assert folded.shape.productions == 1 and budget(folded) == 2
    assert step(folded, PassFailed("p0", "boom"), RUNNING) == [Replace("p0", "boom", 1)]
    seen = Observed(status=Status.RUNNING, failed=(("p0", 1, "boom"),), generation=1)
    assert step(folded, PassFailed("p0", "boom", 1), seen)[-1].status == Status.FAILED
    # 4 tiles × 5 passes: 20 passes, whatever the tiling
    assert budget(plan_of(passes=5, tile=32)) == 2


def test_a_poison_scene_fails_without_spending_the_budget():
    plan = plan_of(w=64, h=64, passes=25, tile=32)  # 100 passes: a budget of 10
    error = "ZeroDivisionError: division by zero"
    # three tasks failing once with one error may be one flaky instance: replaced
    twice = (("p1", 1, error), ("p2", 1, error))
    seen = Observed(status=Status.RUNNING, failed=twice)
    assert step(plan, PassFailed("p3", error), seen) == [Replace("p3", error, 1)]
    # one of them failing again with it after its fresh seed: poison, the execution fails
    seen = Observed(status=Status.RUNNING, failed=twice + (("p3", 1, error),), generation=1)
    actions = step(plan, PassFailed("p1", error, 1), seen)
    assert actions[0] == MarkFailed("p1", error)
    message = actions[1].error["message"]
    assert message.startswith("3 tasks failed with the same error") and error in message
    # failing again with errors of their own is not poison: replaced within the budget
    mixed = (("p1", 1, "A"), ("p2", 1, "B"), ("p3", 1, "C"))
    seen = Observed(status=Status.RUNNING, failed=mixed, generation=1)
    assert step(plan, PassFailed("p1", "A", 1), seen) == [Replace("p1", "A", 2)]
    # a worker dying on every delivery of three tasks, one of them again: poison too
    died = "undeliverable: every delivery that reached a render failed"
    dying = Observed(status=Status.RUNNING, task_status=Status.RUNNING, attempts=9,
                     failed=(("p1", 1, died), ("p2", 1, died), ("p3", 1, died)))
    assert step(plan, DeadLettered(Kind.PRODUCE, "p1", 10), dying)[-1].status == Status.FAILED
    # an execution of one task (its passes folded): that task failing twice alike
    folded = Plan(planning.make_shape(64, 64, 100, None, fold=100))
    seen = Observed(status=Status.RUNNING, failed=(("p0", 1, error),), generation=1)
    assert budget(folded) == 10
    assert step(folded, PassFailed("p0", error, 1), seen)[-1].status == Status.FAILED
    # an error as long as a traceback is clipped in the execution's message
    long = Observed(status=Status.RUNNING, failed=(("p7", 9, "x" * 5000),))
    message = step(plan, PassFailed("p1", "y"), long)[-1].error["message"]
    assert "p7: " + "x" * 100 in message and len(message) < 1500


def test_a_dead_lettered_reduction_is_re_driven_then_fails():
    plan = plan_of()
    up = planning.parent(plan.shape, "p5")
    assert step(plan, DeadLettered(Kind.REDUCE, "p5", 5), RUNNING) == [Redrive(up, "p5")]
    # a reduction that a reducer took and that keeps failing is broken: it fails...
    tired = Observed(status=Status.RUNNING, redrives=REDRIVE_LIMIT, parent_status=Status.RUNNING)
    actions = step(plan, DeadLettered(Kind.REDUCE, "p5", 5), tired)
    assert [type(a) for a in actions] == [End]
    assert "reduction after task p5" in actions[0].error["message"]
    # ...but one that no reducer took (the reducer was down) ten times as often, and
    # still ends once a reducer failing before its claim has been re-driven that often
    down = dataclasses.replace(tired, parent_status=Status.PENDING,
                               redrives=UNTAKEN_REDRIVE_LIMIT - 1)
    assert step(plan, DeadLettered(Kind.REDUCE, "p5", 5), down) == [Redrive(up, "p5")]
    never = dataclasses.replace(down, redrives=UNTAKEN_REDRIVE_LIMIT)
    assert step(plan, DeadLettered(Kind.REDUCE, "p5", 5), never)[-1].status == Status.FAILED
    assert [type(a) for a in step(plan, DeadLettered(Kind.REDUCE, None, 5), RUNNING)] == [End]


def test_lost_inputs_are_produced_again():
    plan = plan_of()
    assert step(plan, InputsLost("r1.1", ("p5", "p6")), RUNNING) == [
        Reproduce("r1.1"), Reproduce("p5"), Reproduce("p6")]


def test_a_straggler_gets_one_speculative_copy():
    plan = plan_of()
    # before any task finished: 120 s
    seen = Observed(status=Status.RUNNING, published=True,
                    running=(("p1", SPECULATE_FIRST_S - 1, False),
                             ("p2", SPECULATE_FIRST_S + 1, False)))
    assert step(plan, Tick(), seen) == [Speculate("p2")]
    # afterwards: twice the mean of the finished ones; never twice, never a reduction
    seen = Observed(status=Status.RUNNING, published=True, mean_done_s=10.0,
                    running=(("p1", 19.0, False), ("p2", 21.0, False), ("p3", 50.0, True),
                             ("r1.0", 500.0, False)))
    assert step(plan, Tick(), seen) == [Speculate("p2")]
    # tasks of milliseconds: no copy of a task before it has run SPECULATE_MIN_S
    seen = Observed(status=Status.RUNNING, published=True, mean_done_s=0.01,
                    running=(("p1", SPECULATE_MIN_S - 1, False),
                             ("p2", SPECULATE_MIN_S + 1, False)))
    assert step(plan, Tick(), seen) == [Speculate("p2")]


def test_the_end_game_copies_the_longest_lagging_task_on_a_finished_task():
    plan = plan_of()  # 16 production tasks, fan-in 4: p5's siblings are not all done
    lag = ENDGAME_FACTOR * 10.0
    running = (("p1", lag + 5, False), ("p2", lag + 9, True), ("p3", lag + 1, False),
               ("p4", lag - 1, False), ("r1.0", 1e6, False))
    endgame = Observed(status=Status.RUNNING, **DONE, done_siblings=1, unstarted=0,
                       mean_done_s=10.0, running=running)
    # one copy per finished task, of a lagging one not copied yet; completions that
    # ask at once spread over them by their index (p6: the longest-running, p5: next)
    assert step(plan, TaskDone("p6", "m"), endgame)[0] == Speculate("p1")
    assert step(plan, TaskDone("p5", "m"), endgame) == [Speculate("p3")]
    # with production tasks still unstarted (or not observed), the slot is theirs
    for unstarted in (3, None):
        seen = Observed(status=Status.RUNNING, **DONE, done_siblings=1, unstarted=unstarted,
                        mean_done_s=10.0, running=running)
        assert step(plan, TaskDone("p5", "m"), seen) == []
    # nothing lags past the factor, or nothing finished yet to compare with
    calm = Observed(status=Status.RUNNING, **DONE, done_siblings=1, unstarted=0, mean_done_s=10.0,
                    running=(("p4", lag - 1, False),))
    assert step(plan, TaskDone("p5", "m"), calm) == []
    blind = Observed(status=Status.RUNNING, **DONE, done_siblings=1, unstarted=0, running=running)
    assert step(plan, TaskDone("p5", "m"), blind) == []
    # a reduction's completion frees no render instance
    assert step(plan, TaskDone("r1.1", "m"), endgame) == []
    # the copy comes with the parent's claim when the group is complete
    up = planning.parent(plan.shape, "p5")
    full = Observed(status=Status.RUNNING, **DONE, unstarted=0, mean_done_s=10.0, running=running,
                    done_siblings=len(planning.children(plan.shape, up)))
    assert step(plan, TaskDone("p5", "m"), full) == [
        Speculate("p3"), ClaimTask(up, Kind.REDUCE, "m", REDUCE_LEASE_S)]
    # tasks of milliseconds: never a copy before SPECULATE_MIN_S
    tiny = Observed(status=Status.RUNNING, **DONE, unstarted=0, mean_done_s=0.01,
                    running=(("p1", SPECULATE_MIN_S - 1, False),))
    assert step(plan, TaskDone("p5", "m"), tiny) == []


def test_with_admission_the_end_game_starts_after_the_last_admission():
    plan = plan_of(passes=8, admission=3)  # 32 production tasks
    seen = Observed(status=Status.RUNNING, **DONE, unstarted=0, mean_done_s=1.0,
                    running=(("p30", 60.0, False),))
    assert step(plan, TaskDone("p0", "m"), seen) == [Publish((3,))]  # admits p3 instead
    assert step(plan, TaskDone("p29", "m"), seen) == [Speculate("p30")]


def test_an_execution_that_stopped_moving_is_re_driven():
    plan = Plan(plan_of().shape, admission_limit=2, stall_s=60.0)
    shape = plan.shape
    # p1, p2, p3 unfinished (their messages were lost); r1.1's children are all done
    # but r1.1 is not (its reducer died); the root waits for r1.0 and r1.1
    unfinished = ("p1", "p2", "p3", "r1.0", "r1.1", shape.root)
    seen = Observed(status=Status.RUNNING, published=True, unfinished=unfinished, idle_s=59.0)
    assert step(plan, Tick(), seen) == []
    seen = Observed(status=Status.RUNNING, published=True, unfinished=unfinished, idle_s=60.0)
    assert step(plan, Tick(), seen) == [Publish((1, 2)),
                                         Redrive("r1.1", planning.children(shape, "r1.1")[-1])]
    # only the root left: it is re-driven from its last child
    seen = Observed(status=Status.RUNNING, published=True, unfinished=(shape.root,), idle_s=61)
    assert step(plan, Tick(), seen) == [
        Redrive(shape.root, planning.children(shape, shape.root)[-1])]
    # everything done, but the execution was never ended: the root again
    seen = Observed(status=Status.RUNNING, published=True, unfinished=(), idle_s=61)
    assert step(plan, Tick(), seen) == [
        Redrive(shape.root, planning.children(shape, shape.root)[-1])]


def test_with_farm_admission_only_the_tasks_holding_a_slot_are_published_again():
    # farm admission: no per-execution limit
    plan = Plan(plan_of().shape, stall_s=60.0, farm=True)
    shape = plan.shape
    # p1 and p2 hold the farm's slots but their deliveries were lost; p3..p5 wait in the
    # farm's queue (its dispatch starts them): queued work does not hide the stall
    unfinished = ("p1", "p2", "p3", "p4", "p5", "r1.0", "r1.1", shape.root)
    seen = Observed(status=Status.RUNNING, published=True, unfinished=unfinished,
                    waiting=("p3", "p4", "p5"), idle_s=60.0)
    assert step(plan, Tick(), seen) == [Admit(), Publish((1, 2))]
    # all of it waiting: nothing to publish, nothing re-driven, the queue dispatched
    seen = Observed(status=Status.RUNNING, published=True, unfinished=unfinished[2:],
                    waiting=("p3", "p4", "p5"), idle_s=600.0)
    assert step(plan, Tick(), seen) == [Admit()]


@pytest.mark.parametrize("status", [Status.DONE, Status.FAILED, Status.CANCELLED])
def test_nothing_is_acted_on_after_the_end(status):
    plan = plan_of()
    seen = Observed(status=status, done_siblings=99, task_status=Status.RUNNING)
    for event in [ExecutionCreated(), Tick(), TaskDelivered("p0", "m"),
                  TaskClaimed("p0", Claim.WON), TaskProduced("p0"), TaskDone("p0", "m"),
                  TaskFailed("p0", "x"), DeadLettered(Kind.PRODUCE, "p0", 5),
                  PassFailed("p0", "x"), InputsLost("r1.0", ("p0",))]:
        assert step(plan, event, seen) == []
    done = dataclasses.replace(seen, task_status=Status.DONE, stored=True)
    assert step(plan, TaskDone(plan.shape.root, "m"), done) == []


# --- property tests: a model of the store and the bus, driven by hypothesis ------------

class World:
    """The store's semantics (claims are conditional writes, done means the output
    exists) and an at-least-once bus, around the real ``step``. A task's event observes
    the task's own status and output, as the reducer reads them."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.shape = plan.shape
        self.status = Status.QUEUED
        self.planned = self.published = False
        self.tasks = {n: {"status": Status.PENDING, "owner": None}
                      for n in planning.all_nodes(self.shape)}
        self.outputs: set[str] = set()
        self.reduced: Counter = Counter()
        self.produced: Counter = Counter()
        self.ends: list[Status] = []
        self.after_end: list = []
        self.pool: list = []  # (event, message that started the invocation)
        self.later: list = []  # dropped messages, redelivered when the pool runs dry
        self.messages = 0
        self.copies = 0
        self.out: set[str] = set()  # production tasks published
        self.most_out = 0  # the most of them published and not done at once

    def message(self, event):
        self.messages += 1
        self.pool.append((event, event))

    def observe(self, event) -> Observed:
        done, used = 0, True
        if isinstance(event, TaskDone):
            up = planning.parent(self.shape, event.node)
            if up is not None:
                kids = planning.children(self.shape, up)
                done = sum(self.tasks[c]["status"] == Status.DONE for c in kids)
                used = done >= len(kids)
        # The end game as the reducer observes it: every running production task lags
        # (no time passes in this model), so each finished one may start a copy.
        productions = [f"p{i}" for i in range(self.shape.productions)]
        unstarted = sum(self.tasks[n]["status"] == Status.PENDING
                        and not self.tasks[n].get("delivered") for n in productions)
        running = tuple((n, 1e9, bool(self.tasks[n].get("copied"))) for n in productions
                        if self.tasks[n]["status"] == Status.RUNNING)
        node = getattr(event, "node", None)
        return Observed(status=self.status, planned=self.planned, published=self.published,
                        done_siblings=done, unstarted=unstarted, mean_done_s=1.0,
                        running=running,
                        task_status=self.tasks[node]["status"] if node in self.tasks else None,
                        # read as the reducer reads it: when its parent is to be reduced
                        stored=node in self.outputs if used else None)

    def cancel(self):
        """The api's cancel: the execution ends cancelled, whatever is in flight."""
        if self.status not in FINAL:
            self.status = Status.CANCELLED
            self.ends.append(Status.CANCELLED)

    def claim(self, node, owner, lease_s):
        t = self.tasks[node]
        if t["status"] == Status.DONE:
            return Claim.DONE
        if t["status"] == Status.RUNNING and t["owner"] != owner and lease_s > 0:
            return Claim.HELD  # no time passes in this model: every lease holds
        t.update(status=Status.RUNNING, owner=owner)
        return Claim.WON

    def process(self, event, origin):
        final_before = self.status in (Status.DONE, Status.FAILED, Status.CANCELLED)
        actions = step(self.plan, event, self.observe(event))
        if final_before and actions:
            self.after_end.append((event, actions))
        for action in actions:
            follow = self.carry_out(action, event)
            if follow is not None:
                self.pool.append((follow, origin))

    def carry_out(self, action, event):
        match action:
            case WriteTasks():
                self.planned = True
            case Publish(indices=indices, first=first):
                for i in indices:
                    self.message(TaskDelivered(f"p{i}", f"m{self.messages}"))
                self.published = self.published or first
                self.out.update(f"p{i}" for i in indices)
                self.most_out = max(self.most_out, sum(
                    self.tasks[n]["status"] != Status.DONE for n in self.out))
            case ClaimTask(node=n, owner=owner, lease_s=lease):
                self.tasks[n]["delivered"] = True
                return TaskClaimed(n, self.claim(n, owner, lease), owner)
            case Speculate(node=n):
                if not self.tasks[n].get("copied"):  # the conditional write
                    self.tasks[n]["copied"] = True
                    self.copies += 1
                    self.message(TaskDelivered(n, f"m{self.messages}"))
            case Produce(node=n):
                if self.tasks[n]["status"] == Status.DONE:
                    return None  # a copy stored the partial first: this result is dropped
                self.produced[n] += 1
                self.outputs.add(n)
                self.tasks[n]["status"] = Status.DONE
                return TaskProduced(n)
            case Announce(node=n):
                self.message(TaskDone(n, f"m{self.messages}"))
            case Reduce(node=n, owner=owner):
                kids = planning.children(self.shape, n)
                assert all(k in self.outputs for k in kids), f"{n} reduced before its inputs"
                self.reduced[n] += 1
                self.outputs.add(n)
                self.tasks[n]["status"] = Status.DONE
                return TaskDone(n, owner)
            case Advance(node=n, owner=owner):
                return TaskDone(n, owner)
            case End(status=status):
                if status == Status.DONE:  # done only with the image stored
                    assert self.shape.root in self.outputs, "done before the image"
                if self.status not in (Status.DONE, Status.FAILED, Status.CANCELLED):
                    self.status = status
                    self.ends.append(status)
        return None


# Up to 9 tiles × 8 passes: trees of 1 to 4 levels, fan-ins of 2 to 9.
shapes = st.tuples(st.integers(8, 40), st.integers(8, 40), st.integers(1, 8),
                   st.sampled_from([16, 32, None]), st.integers(1, 3),
                   st.sampled_from([0, 0, 2, 5]))


def run_world(data, dims, cancel: bool = False, liars: bool = False) -> World:
    """Deliver the world's messages in an order, with fates, that hypothesis draws.
    ``liars``: task events are also published for tasks that are not done (for every
    node at the start and again at random moments), as a duplicate published too early
    would be."""
    w, h, passes, tile, fold, admission = dims
    world = World(Plan(planning.make_shape(w, h, passes, tile, fold), admission))
    world.process(ExecutionCreated(), None)
    nodes = planning.all_nodes(world.shape)
    if liars:
        for node in nodes:
            world.message(TaskDone(node, f"liar-{node}"))
    steps = 0
    cancel_at = data.draw(st.integers(0, 60)) if cancel else -1
    while world.pool or world.later:
        if not world.pool:  # redelivery after the back-off, once per message
            world.pool, world.later = list(dict.fromkeys(world.later)), []
        steps += 1
        if steps == cancel_at:
            world.cancel()
        i = data.draw(st.integers(0, len(world.pool) - 1), label="next")
        event, origin = world.pool.pop(i)
        fates = ["run"] * 6 + ["duplicate", "drop", "crash"] + ["lie"] * liars
        fate = data.draw(st.sampled_from(fates), label="fate")
        if fate == "lie":  # a false claim: the event of a node, done or not
            node = data.draw(st.sampled_from(nodes), label="lie")
            world.message(TaskDone(node, f"liar-{world.messages}"))
        if fate == "drop" and event is origin:
            world.later.append((event, origin))  # lost for now, delivered again later
            continue
        if fate == "crash" and event is not origin:
            world.later.append((origin, origin))  # the invocation died: its message returns
            continue
        if fate == "duplicate" and event is origin:
            # At-least-once: the same message again, after this delivery's invocation
            # (a redelivery of one message id while its first delivery still runs
            # would share its claims; Pub/Sub redelivers after the ack deadline, which
            # the handlers stay well inside).
            world.later.append((event, origin))
        if world.status == Status.QUEUED:
            world.status = Status.RUNNING
        world.process(event, origin)
    return world


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dims=shapes)
def test_any_order_duplicates_and_redelivery_reduce_every_node_exactly_once(data, dims):
    world = run_world(data, dims)
    shape = world.shape
    reductions = [n for n in planning.all_nodes(shape) if n.startswith("r")]
    assert world.reduced == Counter({n: 1 for n in reductions})
    # every partial stored once, whatever the copies and duplicates
    assert world.produced == Counter({f"p{i}": 1 for i in range(shape.productions)})
    assert world.ends == [Status.DONE]  # the root reached once
    assert world.after_end == []
    assert world.copies <= shape.productions  # at most one copy per task


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dims=shapes)
def test_false_task_events_are_never_counted(data, dims):
    """Task events published for every node at the start, and for random nodes, done
    or not, all along: still every node reduced once, every partial stored once, the
    execution done once with its image, nothing acted on after."""
    world = run_world(data, dims, liars=True)
    shape = world.shape
    reductions = [n for n in planning.all_nodes(shape) if n.startswith("r")]
    assert world.reduced == Counter({n: 1 for n in reductions})
    assert world.produced == Counter({f"p{i}": 1 for i in range(shape.productions)})
    assert world.ends == [Status.DONE] and shape.root in world.outputs
    if world.plan.admission_limit:  # no lie admitted a task early
        assert world.most_out <= world.plan.admission_limit
    assert all(t["status"] == Status.DONE for t in world.tasks.values())
    assert world.after_end == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dims=shapes)
def test_after_a_cancel_nothing_runs(data, dims):
    world = run_world(data, dims, cancel=True)
    assert len(world.ends) == 1
    # Nothing acts once the execution is final (the cancel, or the root if it came
    # first). The root may have been reduced just before a cancel ended it: the image
    # exists, the execution still ends cancelled, and nothing is reduced twice.
    assert world.after_end == []
    assert all(count == 1 for count in world.reduced.values())


# --- the same world, broken: renders that fail, messages lost for good, a watchdog ------

class BrokenWorld(World):
    """Renders of some tasks raise (their first pass only), some messages are lost and
    never redelivered (the emulator's abandoned pushes), and when nothing is left to
    deliver the watchdog ticks, as on a farm where every execution stopped moving."""

    def __init__(self, plan: Plan, failing: set[str]):
        super().__init__(plan)
        self.failing = failing
        for t in self.tasks.values():
            t.update(failures=0, generation=0)

    def observe(self, event) -> Observed:
        seen = super().observe(event)
        failed = tuple((n, t["failures"], "boom") for n, t in self.tasks.items()
                       if t["failures"])
        unfinished = tuple(n for n, t in self.tasks.items()
                           if t["status"] in (Status.PENDING, Status.RUNNING))
        node = getattr(event, "node", None)
        return Observed(status=seen.status, planned=seen.planned, published=seen.published,
                        done_siblings=seen.done_siblings, failed=failed,
                        task_status=seen.task_status, stored=seen.stored,
                        generation=self.tasks[node]["generation"] if node in self.tasks else 0,
                        unfinished=unfinished, idle_s=1e9, now_s=1e9)

    def carry_out(self, action, event):
        match action:
            case Produce(node=n) if n in self.failing and self.tasks[n]["generation"] == 0:
                return PassFailed(n, "boom", self.tasks[n]["generation"])
            case Replace(node=n, generation=g):
                self.tasks[n].update(status=Status.PENDING, owner=None, generation=g,
                                     failures=self.tasks[n]["failures"] + 1)
                self.message(TaskDelivered(n, f"m{self.messages}"))
            case MarkFailed(node=n):
                self.tasks[n].update(status=Status.FAILED,
                                     failures=self.tasks[n]["failures"] + 1)
            case Redrive(node=n, child=child):
                if self.tasks[n]["status"] != Status.DONE:
                    self.tasks[n].update(status=Status.PENDING, owner=None)
                self.message(TaskDone(child, f"m{self.messages}"))
            case _:
                return super().carry_out(action, event)
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dims=shapes)
def test_with_failed_renders_and_lost_messages_every_execution_ends(data, dims):
    w, h, passes, tile, fold, admission = dims
    plan = Plan(planning.make_shape(w, h, passes, tile, fold), admission)
    nodes = [f"p{i}" for i in range(plan.shape.productions)]
    failing = set(data.draw(st.lists(st.sampled_from(nodes), max_size=4), label="failing"))
    world = BrokenWorld(plan, failing)
    world.process(ExecutionCreated(), None)
    ticks = 0
    while world.pool or world.later or world.status not in FINAL:
        if not world.pool:
            if world.later:
                world.pool, world.later = list(dict.fromkeys(world.later)), []
            else:
                ticks += 1
                assert ticks <= 50, "the watchdog does not get the execution moving"
                world.process(Tick(), None)
                continue
        i = data.draw(st.integers(0, len(world.pool) - 1), label="next")
        event, origin = world.pool.pop(i)
        fate = data.draw(st.sampled_from(["run"] * 6 + ["lose", "crash"]), label="fate")
        if fate == "lose" and event is origin:
            continue  # abandoned: only the watchdog gets it going again
        if fate == "crash" and event is not origin:
            continue  # the invocation died and its message was abandoned too
        if world.status == Status.QUEUED:
            world.status = Status.RUNNING
        world.process(event, origin)
    assert len(world.ends) == 1 and world.after_end == []
    if len(failing) < budget(plan):
        assert world.ends == [Status.DONE]
    if world.ends == [Status.DONE]:
        assert world.reduced[plan.shape.root] == 1
        assert all(t["status"] == Status.DONE for t in world.tasks.values())
    else:
        assert sum(t["failures"] for t in world.tasks.values()) >= budget(plan)
