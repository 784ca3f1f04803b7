"""A speculative copy cut into pieces: bands of a tile's rows that several instances
render at once, the last one stored assembling the task's partial. The pieces must add
up to the very pixels of the task's own render (the producers' pixels do not depend on
how a tile is cut), so which copy wins never changes the image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from francine import producers
from francine.base.config import Settings
from francine.domain import imaging, planning, scheduler
from francine.domain.envelope import Message, task_message
from francine.domain.producer import Resources, Tile
from francine.domain.records import Claim, Session, Status
from francine.handlers.reducer import Reducer
from francine.handlers.worker import Worker, parse_piece
from francine.services import executions, recovery, scheduling
from francine.twins import pump, twin_adapters

SCENE = {"width": 48, "height": 40, "nao_samples": 3}


@pytest.mark.parametrize("name", ["ao", "pathtracer"])
def test_bands_of_a_tile_are_the_tiles_own_pixels(name):
    producer = producers.get(name)
    assert producer.exact_tiles
    scene = producer.validate({**producer.default_scene(), "width": 64, "height": 48}, {})
    if name == "pathtracer":
        scene["samples_per_pixel"] = 2
    tile, seed = Tile(16, 8, 40, 37), 12345
    resources = Resources({}, lambda info: None, {})
    whole = producer.render(scene, tile, seed, resources)
    for pieces in (2, 5, 8):
        bands = [producer.render(scene, planning.band(tile, j, pieces), seed, resources)
                 for j in range(pieces)]
        np.testing.assert_array_equal(np.concatenate(bands, axis=0), whole)


def test_blender_copies_stay_whole():
    pytest.importorskip("bpy")
    assert producers.get("blender").exact_tiles is False


def test_bands_cover_the_tile_once_and_refuse_more_bands_than_rows():
    tile = Tile(3, 10, 7, 11)
    bands = [planning.band(tile, j, 4) for j in range(4)]
    assert [b.height for b in bands] == [2, 3, 3, 3]
    assert bands[0].y0 == 10 and bands[-1].y0 + bands[-1].height == 21
    assert all(a.y0 + a.height == b.y0 for a, b in zip(bands[:-1], bands[1:], strict=True))
    assert all((b.x0, b.width) == (3, 7) for b in bands)
    with pytest.raises(ValueError):
        planning.band(tile, 0, 12)
    assert planning.band_name("p3", 1, 8) == "p3.band1of8"
    assert planning.band_name("p3", 1, 8, 2) == "p3.band1of8~2"


@pytest.mark.parametrize("value, parsed", [("0/8", (0, 8)), ("7/8", (7, 8)), ("8/8", None),
                                           ("1/0", None), ("-1/8", None), ("a/8", None),
                                           (3, None), ("1/1000", None), ("", None)])
def test_a_piece_is_parsed_or_refused(value, parsed):
    assert parse_piece(value) == parsed


def world(fold: int = 1):
    # A farm of 2 instances: folding may leave as few tasks.
    settings = dataclasses.replace(Settings(), min_task_s=1e6 if fold > 1 else 0.0,
                                   max_render_instances=2)
    ad = twin_adapters(settings)
    ad.store.create_session(Session("s", "u", "ao", "png", SCENE))
    ex, _ = executions.start(ad, "u", "s", {"parallel": 3, "tile": 16},
                             idempotency_key="same-seeds")
    return ad, ad.store.execution("s", ex.id)


def deliver_pieces(ad, ex, node: str, pieces: int, order=None) -> list[str]:
    worker, tid = Worker(ad), planning.task_id(ex.id, node)
    outcomes = []
    for j in order or range(pieces):
        outcomes.append(worker.handle(Message(f"m{j}", task_message(
            "s", ex.id, tid, f"{j}/{pieces}"), {})))
    return outcomes


@pytest.mark.parametrize("fold", [1, 3])
def test_the_assembled_partial_is_the_tasks_own_and_the_original_then_drops(fold):
    reference, ref_ex = world(fold)
    pump(reference, Worker(reference), Reducer(reference))
    ad, ex = world(fold)
    shape = planning.Shape.from_dict(ex.shape)
    assert shape.fold == fold
    node = planning.node_name(0, 1)
    # The original is running (claimed) while its copy's pieces render, out of order.
    tid = planning.task_id(ex.id, node)
    assert ad.store.claim_task("s", ex.id, tid, "original", 0.0)[0] == Claim.WON
    outcomes = deliver_pieces(ad, ex, node, 4, order=[2, 0, 3, 1])
    assert outcomes == ["stored piece 2 of 4", "stored piece 0 of 4", "stored piece 3 of 4",
                        "rendered"]
    task = ad.store.get_task("s", ex.id, tid)
    assert task.status == Status.DONE and task.work_s > 0
    mine = imaging.load_partial(ad.blobs.get_partial("s", ex.id, node))
    theirs = imaging.load_partial(reference.blobs.get_partial("s", ref_ex.id, node))
    np.testing.assert_array_equal(mine.sum, theirs.sum)
    np.testing.assert_array_equal(mine.count, theirs.count)
    assert (mine.x0, mine.y0, mine.tile) == (theirs.x0, theirs.y0, theirs.tile)
    # Its task event went out once; a late piece finds the task done and renders nothing.
    events = [d.message.payload["node"] for d in ad.bus.pull("reduce", 100)]
    assert events == [node]
    assert deliver_pieces(ad, ex, node, 4, order=[1]) == ["nothing to do"]
    # The whole pipeline then ends with the reference's image.
    pump(ad, Worker(ad), Reducer(ad))
    done = ad.store.execution("s", ex.id)
    assert done.status == Status.DONE
    assert ad.blobs.get_result(done.result) == reference.blobs.get_result(
        reference.store.execution("s", ref_ex.id).result)


def test_pieces_that_end_after_the_original_store_nothing_more():
    ad, ex = world()
    node = planning.node_name(0, 0)
    pump(ad, Worker(ad), Reducer(ad))  # the original and everything else finished
    writes = dict(ad.blobs.objects)
    assert deliver_pieces(ad, ex, node, 2) == ["skipped: execution gone or ended"] * 2
    assert ad.blobs.objects == writes


def test_a_late_assembly_loses_to_the_original_and_is_dropped():
    ad, ex = world()
    node, tid = planning.node_name(0, 0), planning.task_id(ex.id, planning.node_name(0, 0))
    worker = Worker(ad)
    deliver_pieces(ad, ex, node, 2, order=[0])
    # The original renders and stores the partial while the last piece renders.
    original = Message("orig", task_message("s", ex.id, tid), {})
    assert worker.handle(original) == "rendered"
    task = ad.store.get_task("s", ex.id, tid)
    assert worker.produce_piece(ex, planning.Shape.from_dict(ex.shape), task, 1, 2) is False
    assert task.status == Status.DONE
    assert ad.store.get_task("s", ex.id, tid).finished is not None


def test_malformed_pieces_are_skipped_without_rendering():
    ad, ex = world()
    tid = planning.task_id(ex.id, "p0")
    out = Worker(ad).handle(Message("m", {**task_message("s", ex.id, tid), "piece": "9/4"}, {}))
    assert out == "skipped: malformed piece '9/4'"
    assert ad.store.get_task("s", ex.id, tid).status == Status.PENDING


def test_the_end_game_cuts_copies_for_exact_producers_only():
    shape = planning.make_shape(64, 64, 8, 64)
    seen = scheduler.Observed(status=Status.RUNNING, task_status=Status.DONE, stored=True,
                              unstarted=0, mean_done_s=10.0, running=(("p1", 30.0, False),))
    for pieces in (1, 8):
        plan = scheduler.Plan(shape, copy_pieces=pieces)
        assert scheduler.step(plan, scheduler.TaskDone("p0"), seen) [0] == \
            scheduler.Speculate("p1", pieces)
    tick = dataclasses.replace(seen, published=True, running=(("p1", 30.0, False),))
    assert scheduler.Speculate("p1", 8) in scheduler.step(
        scheduler.Plan(shape, copy_pieces=8), scheduler.Tick(), tick)
    ad, ex = world()
    assert recovery.scheduler_plan(ad, ex).copy_pieces == Settings().copy_pieces == 8  # ao
    ad.settings = dataclasses.replace(ad.settings, copy_pieces=1)
    assert recovery.scheduler_plan(ad, ex).copy_pieces == 1
    ad.settings = dataclasses.replace(ad.settings, copy_pieces=1000)
    assert recovery.scheduler_plan(ad, ex).copy_pieces == scheduler.MAX_COPY_PIECES
    if "blender" in producers.names():
        blender = dataclasses.replace(ex, producer="blender")
        assert recovery.scheduler_plan(ad, blender).copy_pieces == 1


def test_the_end_game_copies_a_late_starter_only_when_copies_are_cut():
    shape = planning.make_shape(64, 64, 8, 64)
    # p1 straggles (past 1.25 × the mean), p2 runs as usual, p3 started late.
    seen = scheduler.Observed(status=Status.RUNNING, task_status=Status.DONE, stored=True,
                              unstarted=0, mean_done_s=10.0,
                              running=(("p1", 13.0, False), ("p2", 8.0, False),
                                       ("p3", 2.0, False)))
    cut, whole = scheduler.Plan(shape, copy_pieces=8), scheduler.Plan(shape)
    assert scheduler.step(cut, scheduler.TaskDone("p0"), seen)[0] == scheduler.Speculate("p1", 8)
    # ...and stragglers do not starve the late starters: the completions share them.
    assert scheduler.step(cut, scheduler.TaskDone("p5"), seen)[0] == scheduler.Speculate("p3", 8)
    no_straggler = dataclasses.replace(seen, running=seen.running[1:])
    assert scheduler.step(cut, scheduler.TaskDone("p0"), no_straggler)[0] == \
        scheduler.Speculate("p3", 8)
    assert not any(isinstance(a, scheduler.Speculate)
                   for a in scheduler.step(whole, scheduler.TaskDone("p0"), no_straggler))
    # Completions that ask at once spread over the candidates.
    two = dataclasses.replace(seen, running=(("p1", 13.0, False), ("p2", 14.0, False)))
    picked = {scheduler.step(cut, scheduler.TaskDone(f"p{i}"), two)[0].node for i in (4, 5)}
    assert picked == {"p1", "p2"}


@pytest.mark.parametrize("piece_state", [Status.DONE, Status.FAILED, None])
def test_a_piece_of_a_finished_or_unknown_task_does_nothing(piece_state):
    shape = planning.make_shape(64, 64, 8, 64)
    seen = scheduler.Observed(status=Status.RUNNING, task_status=piece_state)
    assert scheduler.step(scheduler.Plan(shape), scheduler.PieceDelivered("p1", 0, 4),
                          seen) == []
    running = dataclasses.replace(seen, task_status=Status.RUNNING)
    assert scheduler.step(scheduler.Plan(shape), scheduler.PieceDelivered("p1", 0, 4),
                          running) == [scheduler.ProducePiece("p1", 0, 4)]


def test_a_dead_lettered_piece_is_ignored_and_counts_against_nothing():
    ad, ex = world()
    tid = planning.task_id(ex.id, "p0")
    ad.store.claim_task("s", ex.id, tid, "original", 0.0)
    dead = Message("d", task_message("s", ex.id, tid, "3/8"),
                   {"type": "produce", "CloudPubSubDeadLetterSourceDeliveryCount": "5"})
    from francine.domain.envelope import DEAD_LETTER_ATTRIBUTE

    dead.attributes[DEAD_LETTER_ATTRIBUTE] = "render"
    assert Reducer(ad).handle(dead) == "ignored: a piece of a speculative copy"
    task = ad.store.get_task("s", ex.id, tid)
    assert task.status == Status.RUNNING and task.failures == 0 and task.generation == 0
    assert ad.store.execution("s", ex.id).status not in ("failed", "done")


def test_a_copy_is_published_once_in_pieces_no_more_than_the_tile_has_rows():
    ad, ex = world()
    shape = planning.Shape.from_dict(ex.shape)
    run = scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex))
    ad.bus.pull("render", 1000)  # the originals
    scheduling.carry_out(run, scheduler.Speculate("p0", 8))
    scheduling.carry_out(run, scheduler.Speculate("p0", 8))  # once per task
    got = [d.message.payload["piece"] for d in ad.bus.pull("render", 1000)]
    assert got == [f"{j}/8" for j in range(8)]
    # A tile of 8 rows (the image is 40 high: its last row of tiles) takes 8 at most.
    last = planning.node_name(0, shape.productions - 1)
    assert planning.tile_of(shape, shape.productions - 1).height == 8
    scheduling.carry_out(run, scheduler.Speculate(last, 64))
    got = [d.message.payload["piece"] for d in ad.bus.pull("render", 1000)]
    assert got == [f"{j}/8" for j in range(8)]


# --- on the emulators ------------------------------------------------------------------

@pytest.fixture(scope="module")
def three_workers(tmp_path_factory):
    from francine.tools.local.processes import environment
    from francine.tools.local.stack import Stack, StackOptions
    from francine.tools.wiring import make_adapters

    options = StackOptions(workers=3, copy_pieces=2, state_dir=tmp_path_factory.mktemp("pieces"),
                           extra_env={"FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as s:
        with environment(s.info["env"]):
            s.test_adapters = make_adapters(Settings.from_env())
        yield s


def test_a_copy_in_pieces_beats_its_slow_original_on_the_emulators(three_workers):
    """One task renders on one worker; its copy, cut in two, renders on the two others
    and wins; the original's render is dropped; the image is the reference's."""
    import pathlib
    import time

    from test_api_pipeline import decode_png, reference_image

    from francine.tools.client import Client
    from francine.tools.local.stack import create_user_in

    stack, ad = three_workers, three_workers.test_adapters
    client = Client(stack.info["api_url"],
                    create_user_in(stack.info["env"], stack.info["project"], "pieces"))
    # 128×128 at 64 × (1 + 36²) rays a pixel: seconds on one thread.
    scene = {"width": 128, "height": 128, "nsubsamples": 8, "nao_samples": 36}
    sid = client.create_session("ao", scene)["id"]
    eid = client.execute(sid, parallel=1)["id"]
    tid = planning.task_id(eid, "p0")
    deadline = time.monotonic() + 60
    while (task := ad.store.get_task(sid, eid, tid)) is None or task.status != Status.RUNNING:
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    ex = ad.store.execution(sid, eid)
    assert recovery.scheduler_plan(ad, ex).copy_pieces == 2
    scheduling.carry_out(scheduling.Run(ad, ex, recovery.scheduler_plan(ad, ex)),
                         scheduler.Speculate("p0", 2))
    status = client.wait(sid, eid, timeout_s=120)
    assert status["status"] == "done", status
    assert status["tasks"]["speculative"] == 1

    def logs() -> str:
        return "".join(p.read_text(errors="replace")
                       for p in pathlib.Path(stack.info["logs"]).glob("worker-*.log"))

    assert logs().count("stored band") == 1  # the first band; the second assembled
    deadline = time.monotonic() + 60
    while "another copy finished first" not in logs():  # the original, when it ends
        assert time.monotonic() < deadline, "the original render never ended"
        time.sleep(0.2)
    image = decode_png(client.result(sid, eid))
    np.testing.assert_array_equal(image, reference_image(scene, eid, 1))
