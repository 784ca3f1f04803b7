"""The planner and the scheduler are pure: fed shapes and events, compared with what a
correct reduction tree must do."""

import math
import random

import pytest

from francine.domain import planning
from francine.domain.scheduler import ClaimTask, End, Plan, Publish, done_actions


@pytest.mark.parametrize("w,h,passes,tile", [
    (512, 512, 8, None), (512, 512, 8, 256), (100, 70, 3, 32), (64, 64, 1, None),
    (1000, 10, 50, 8), (512, 512, 1000, 128)])
def test_tree_covers_every_task_once(w, h, passes, tile):
    shape = planning.make_shape(w, h, passes, tile)
    n = shape.productions
    assert n == math.ceil(w / shape.tile) * math.ceil(h / shape.tile) * passes
    assert shape.fan_in == max(2, math.ceil(math.sqrt(n)))
    nodes = planning.all_nodes(shape)
    assert len(nodes) == len(set(nodes)) == shape.total_tasks
    # every node but the root has exactly one parent, whose children include it
    for node in nodes:
        up = planning.parent(shape, node)
        if node == shape.root:
            assert up is None
        else:
            assert node in planning.children(shape, up)
            assert len(planning.children(shape, up)) <= shape.fan_in
    # leaves under the root are exactly the production tasks
    def leaves(node):
        kids = planning.children(shape, node)
        return [node] if not kids else [x for k in kids for x in leaves(k)]
    assert sorted(leaves(shape.root)) == sorted(planning.node_name(0, i) for i in range(n))


def test_single_task_still_has_a_root_reduction():
    shape = planning.make_shape(64, 64, 1, None)
    assert shape.productions == 1
    assert shape.root == "r1.0"
    assert planning.children(shape, "r1.0") == ["p0"]
    assert [type(a) for a in done_actions(Plan(shape), "p0", "m", 1)] == [ClaimTask]
    assert done_actions(Plan(shape), "r1.0", "m", 0) == [End("done")]


def test_tiles_cover_the_image_exactly():
    shape = planning.make_shape(100, 70, 2, 32)
    covered = [[0] * 100 for _ in range(70)]
    for i in range(shape.productions):
        t = planning.tile_of(shape, i)
        for y in range(t.y0, t.y0 + t.height):
            for x in range(t.x0, t.x0 + t.width):
                covered[y][x] += 1
    assert all(c == 2 for row in covered for c in row)  # once per pass


def test_passes_of_a_tile_are_neighbours_and_share_seeds_across_tiles():
    shape = planning.make_shape(64, 64, 4, 32)
    assert [planning.tile_of(shape, i) for i in range(4)] == [planning.tile_of(shape, 0)] * 4
    tasks = planning.planned_tasks("exec-1", shape)
    seeds = {(t.pass_index, t.seed) for t in tasks if t.kind == "produce"}
    assert len(seeds) == 4  # one seed per pass, the same for every tile
    again = planning.planned_tasks("exec-1", shape)
    assert [t.seed for t in again] == [t.seed for t in tasks]
    other = planning.planned_tasks("exec-2", shape)
    assert {t.seed for t in other if t.seed} .isdisjoint({t.seed for t in tasks if t.seed})


def test_task_ids_are_deterministic_unique_and_spread():
    ids = [planning.task_id("e", f"p{i}") for i in range(1000)]
    assert len(set(ids)) == 1000
    assert ids == [planning.task_id("e", f"p{i}") for i in range(1000)]
    # hash prefixes: consecutive tasks do not share a key-space neighbourhood
    assert len({i[:2] for i in ids}) > 200


def simulate(shape, order, admission=0):
    """Feed completion events in ``order`` to the scheduler, one at a time; returns how
    often each reduction was claimed and which productions were admitted."""
    done, triggered, admitted = set(), {}, []
    pending = list(order)
    while pending:
        node = pending.pop(0)
        done.add(node)
        up = planning.parent(shape, node)
        siblings = 0 if up is None else sum(c in done for c in planning.children(shape, up))
        for action in done_actions(Plan(shape, admission), node, "m", siblings):
            if isinstance(action, ClaimTask):
                triggered[action.node] = triggered.get(action.node, 0) + 1
                pending.append(action.node)  # the reduction finishes later
            elif isinstance(action, Publish):
                admitted.extend(action.indices)
    return done, triggered, admitted


@pytest.mark.parametrize("seed", range(5))
def test_every_reduction_triggers_exactly_once_in_any_order(seed):
    shape = planning.make_shape(300, 200, 7, 64)
    order = [planning.node_name(0, i) for i in range(shape.productions)]
    random.Random(seed).shuffle(order)
    done, triggered, _ = simulate(shape, order)
    reductions = [n for n in planning.all_nodes(shape) if n.startswith("r")]
    assert triggered == {r: 1 for r in reductions}
    assert shape.root in done


def test_admission_control_admits_each_remaining_task_once():
    shape = planning.make_shape(64, 64, 20, None)
    k = 3
    _, _, admitted = simulate(shape, [planning.node_name(0, i) for i in range(shape.productions)],
                              admission=k)
    assert sorted(admitted) == list(range(k, shape.productions))


def test_parse_node_rejects_garbage():
    for bad in ["", "x1", "p", "r0.1", "r1", "r1.x", "p-1"]:
        with pytest.raises(ValueError):
            planning.parse_node(bad)
    assert planning.parse_node("r2.7") == (2, 7)


def test_tiles_are_sized_to_the_task_budget():
    # fits whole: the image is one tile
    assert planning.largest_tile(512, 512, 1e-7, 30) == 512
    # too much work: the largest multiple of 8 within budget
    edge = planning.largest_tile(4096, 4096, 1e-3, 30)
    assert edge % 8 == 0 and edge * edge * 1e-3 <= 30 < (edge + 8) ** 2 * 1e-3
    # never below 8 pixels, however slow
    assert planning.largest_tile(4096, 4096, 10.0, 30) == 8
    shape = planning.make_shape(100, 60, 2, 64)
    assert planning.task_seconds(shape, 1e-3) == 64 * 60 * 1e-3  # clipped to the image


@pytest.mark.parametrize("passes,fold", [(10, 3), (8, 8), (7, 1), (5, 9)])
def test_folded_passes_cover_every_pass_of_every_tile_once(passes, fold):
    shape = planning.make_shape(100, 70, passes, 32, fold)
    assert shape.fold == min(fold, passes)
    assert shape.productions == shape.tiles * math.ceil(passes / shape.fold)
    seen = {}
    for t in planning.planned_tasks("e", shape):
        if t.kind == "produce":
            for p in range(t.pass_index, t.pass_index + t.passes):
                key = (t.tile, p)
                assert key not in seen
                seen[key] = t.seed if p == t.pass_index else None
            assert t.seed == planning.seed_for("e", t.pass_index)  # seeds stay per pass
    assert len(seen) == shape.tiles * passes


def test_passes_are_folded_up_to_the_minimum_task_time_and_within_the_bound():
    # 30 ms passes, 0.25 s minimum: 9 passes per task
    assert planning.passes_per_task(0.03, 4096, 0.25, 30) == 9
    assert planning.passes_per_task(0.03, 4, 0.25, 30) == 4  # never more than exist
    assert planning.passes_per_task(0.5, 100, 0.25, 30) == 1  # a pass is long enough
    assert planning.passes_per_task(0.03, 100, 0, 30) == 1  # folding off
    assert planning.passes_per_task(0.03, 4096, 10.0, 0.3) == 10  # the bound wins


def test_folding_amortises_a_tasks_fixed_cost():
    # 0.2 s passes, 0.3 s of fixed cost per task: 6 passes keep it at 20% (0.3 / 1.5).
    assert planning.passes_per_task(0.2, 64, 0, 30, overhead_s=0.3) == 6
    assert planning.passes_per_task(0.2, 4, 0, 30, overhead_s=0.3) == 4  # all there are
    assert planning.passes_per_task(0.2, 64, 0, 0.5, overhead_s=0.3) == 2  # the bound wins
    assert planning.passes_per_task(5.0, 64, 0, 30, overhead_s=0.3) == 1  # long enough
    # ... but never fewer tasks than instances, while there are enough tile-passes:
    # 4 tiles × 4 passes on 2 instances may fold all 4; on 8 instances, 2 per task.
    assert planning.passes_per_task(0.2, 4, 0, 30, overhead_s=1, tiles=4, instances=2) == 4
    assert planning.passes_per_task(0.2, 4, 0, 30, overhead_s=1, tiles=4, instances=8) == 2
    assert planning.passes_per_task(0.2, 4, 0, 30, overhead_s=1, tiles=4, instances=64) == 1
    # issue's case: 512² ao at parallel 4096 becomes 456 tasks, not 4096
    shape = planning.make_shape(512, 512, 4096, None, 9)
    assert shape.productions == 456
