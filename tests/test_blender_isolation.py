"""Blender in processes of its own: a file that crashes Blender fails its own task and
nothing else; the worker starts Blender before its first task; an idle worker costs no
CPU; the passes of a folded task are rendered in one request, each as Blender renders
its seed.

The crash is made deterministic by ``child.ABORT_ENV``: the Blender process aborts
(``os.abort``, SIGABRT, as Blender does on a failed assertion) when it is about to render
the file named there; everything around it is the production path.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

from francine.domain.producer import ResourceInfo, Resources, Tile

bpy = pytest.importorskip("bpy")

WIDTH, HEIGHT = 32, 24
REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> pathlib.Path:
    from francine.producers.blender import examples

    root = tmp_path_factory.mktemp("files")
    examples.checker_png(root / "textures" / "checker.png")
    examples.build(root / "demo.blend", WIDTH, HEIGHT, texture="textures/checker.png")
    examples.build(root / "crash.blend", WIDTH, HEIGHT)
    return root


def session(src: pathlib.Path, names: list[str], cache: pathlib.Path) -> Resources:
    from francine.producers import blender

    cache.mkdir(exist_ok=True)
    infos = {}
    for name in names:
        data = (src / name).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (cache / sha).write_bytes(data)
        infos[name] = ResourceInfo(name, sha, len(data),
                                   blender.PRODUCER.inspect_resource(name, src / name) or None)
    return Resources(infos, lambda info: cache / info.sha256, {})


def direct(blend: pathlib.Path, seed: int, tmp: pathlib.Path) -> np.ndarray:
    """Blender itself, in this process: the file as saved, 2 samples, ``seed``."""
    import OpenEXR

    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    c = sc.cycles
    c.samples, c.seed, c.device = 2, seed, "CPU"
    c.use_adaptive_sampling = c.use_denoising = False
    sc.render.image_settings.file_format = "OPEN_EXR"
    sc.render.image_settings.color_depth = "32"
    sc.render.filepath = str(tmp / f"direct-{seed}.exr")
    sc.render.use_file_extension = False
    bpy.ops.render.render(write_still=True)
    with OpenEXR.File(sc.render.filepath) as f:
        return np.array(f.parts[0].channels["RGBA"].pixels, np.float32)


@pytest.fixture
def host():
    """The worker's Blender processes, started afresh (so that they see this test's
    environment) and killed afterwards."""
    from francine.producers.blender import isolation

    isolation.HOST.shutdown()
    yield isolation.HOST
    isolation.HOST.shutdown()


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loaded(pid: int, library: str) -> bool:
    return library in pathlib.Path(f"/proc/{pid}/maps").read_text()


def test_a_file_that_crashes_blender_fails_only_its_own_task(src, tmp_path, host,
                                                            monkeypatch):
    from francine.base import errors
    from francine.producers import blender
    from francine.producers.blender import child, isolation

    monkeypatch.setenv(child.ABORT_ENV, "crash.blend")
    demo = session(src, ["demo.blend", "textures/checker.png"], tmp_path / "a")
    crash = session(src, ["crash.blend"], tmp_path / "b")
    p = blender.PRODUCER
    demo_scene = p.validate({"blend": "demo.blend", "samples": 2}, demo.infos)
    crash_scene = p.validate({"blend": "crash.blend", "samples": 2}, crash.infos)
    whole = Tile(0, 0, WIDTH, HEIGHT)

    messages = []
    for _ in range(2):
        with pytest.raises(isolation.BlenderDied) as died:
            p.render(crash_scene, whole, 7, crash)
        messages.append(str(died.value))
        # A failed pass for worker.py (replaced, then the failure budget or the poison
        # rule ends the execution), not a scene error ending it on one crash.
        assert not isinstance(died.value, ValueError | errors.FrancineError)
    # Blender's last words reach the error, the same each time (the poison rule
    # compares error texts), naming neither a process nor a local path.
    assert "SIGABRT" in messages[0] and "test abort: rendering crash.blend" in messages[0]
    assert messages[0] == messages[1]
    assert str(tmp_path) not in messages[0] and "/tmp/" not in messages[0]

    # The worker lives on: the next task, another file, renders as Blender does.
    got = p.render(demo_scene, whole, 7, demo)
    np.testing.assert_allclose(got, direct(src / "demo.blend", 7, tmp_path),
                               rtol=1e-5, atol=1e-6)


def test_another_file_takes_a_warm_spare_and_the_old_process_is_killed(src, tmp_path, host):
    from francine.producers import blender

    a = session(src, ["demo.blend", "textures/checker.png"], tmp_path / "a")
    b = session(src, ["crash.blend"], tmp_path / "b")
    p = blender.PRODUCER
    whole = Tile(0, 0, WIDTH, HEIGHT)
    host.warm()
    host.wait_spare()
    (spare,) = host.pids()
    assert loaded(spare, "bpy/__init__")  # it has imported bpy already

    p.render(p.validate({"blend": "demo.blend", "samples": 1}, a.infos), whole, 1, a)
    host.wait_spare()
    first, new_spare = host.pids()
    assert first == spare  # the spare took the file; a new spare stands by
    p.render(p.validate({"blend": "demo.blend", "samples": 1}, a.infos), whole, 2, a)
    assert host.pids()[0] == first  # the same file stays in its process

    p.render(p.validate({"blend": "crash.blend", "samples": 1}, b.infos), whole, 3, b)
    assert host.pids()[0] == new_spare
    assert not pathlib.Path(f"/proc/{first}").exists()  # killed and reaped
    assert a.memo["blender.open"].opened == 1 and b.memo["blender.open"].opened == 1


def test_an_idle_worker_uses_no_cpu(src, tmp_path, host):
    """Right after Blender tasks, the worker and its Blender processes (the open file's
    and the spare) use no CPU while no task comes: persistent data keeps Cycles' threads,
    which must not spin."""
    from francine.producers import blender
    from francine.producers.blender import isolation

    s = session(src, ["demo.blend", "textures/checker.png"], tmp_path / "a")
    scene = blender.PRODUCER.validate({"blend": "demo.blend", "samples": 16}, s.infos)
    blender.PRODUCER.render(scene, Tile(0, 0, WIDTH, HEIGHT), 1, s)
    host.wait_spare()
    before = isolation.cpu_seconds()
    # The probe sees Blender's work (the worker's own clock does not): enough samples
    # that it is well above the clock's 10-ms ticks.
    blender.PRODUCER.render({**scene, "samples": 256}, Tile(0, 0, WIDTH, HEIGHT), 2, s)
    assert isolation.cpu_seconds() - before > 0.05

    pids = [os.getpid(), *host.pids()]
    assert len(pids) == 3
    start = {pid: cpu_seconds(pid) for pid in pids}
    t0 = time.monotonic()
    time.sleep(2.0)
    seconds = time.monotonic() - t0
    used = {pid: cpu_seconds(pid) - start[pid] for pid in pids}
    assert sum(used.values()) / seconds < 0.1, used


def test_folded_passes_are_each_the_render_of_their_seed(src, tmp_path, host):
    """One request for three seeds: each pass equals Blender's render with its seed."""
    from francine.producers import blender

    s = session(src, ["demo.blend", "textures/checker.png"], tmp_path / "a")
    scene = blender.PRODUCER.validate({"blend": "demo.blend", "samples": 2}, s.infos)
    tile = Tile(8, 6, 16, 12)
    seeds = [11, 12, 13]
    passes = blender.PRODUCER.render_passes(scene, tile, seeds, s)
    assert len(passes) == 3
    for seed, got in zip(seeds, passes, strict=True):
        want = direct(src / "demo.blend", seed, tmp_path)[6:18, 8:24]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.abs(passes[0] - passes[1]).mean() > 1e-4  # the seeds differ


def test_the_render_service_starts_blender_when_it_starts(tmp_path):
    """Loading the service's module starts a spare Blender process that imports bpy
    (the service itself does not)."""
    code = ("import sys, main\n"
            "from francine.producers.blender import isolation\n"
            "isolation.HOST.wait_spare()\n"
            "print(isolation.HOST.pids()[0], 'bpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "functions" / "renderer",
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FRANCINE_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    pid, imported_here = out.stdout.split()[-2:]
    assert imported_here == "False"
    assert int(pid) != os.getpid()
