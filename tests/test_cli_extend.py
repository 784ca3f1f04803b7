"""``francine render scene.blend`` with a noise target, a cap and a seed: the same
request fields as the ao path (tests/test_cli_commands.py), through the .blend path."""

from __future__ import annotations

from test_blender_cli import shot, started  # noqa: F401 - shot is a fixture
from test_cli_commands import api, one_line_error, run


def test_blend_render_sends_noise_cap_and_seed(client, shot, tmp_path):  # noqa: F811
    out = tmp_path / "noise.png"
    r = run("render", str(shot), "-o", str(out), "--parallel", "2", "--samples", "1",
            "--size", "20x10", "--noise", "0.5", "--max-passes", "4",
            "--max-cpu-seconds", "3600", "--seed", "3", *api(client), timeout=300)
    assert r.returncode == 0, r.stderr
    (sid, eid, _), = started(r.stderr)
    status = client.execution(sid, eid)
    assert status["until"] == {"noise": 0.5, "max_passes": 4}
    assert status["seed"] == 3 and status["max_cpu_seconds"] == 3600
    assert status["stopped"] in ("noise", "max_passes") and 2 <= status["passes"] <= 4
    assert out.read_bytes() == client.result(sid, eid)
    assert f"passes {status['passes']}" in r.stdout  # the summary


def test_blend_max_passes_needs_noise(client, shot, tmp_path):  # noqa: F811
    r = run("render", str(shot), "-o", str(tmp_path / "o.png"), "--max-passes", "4",
            *api(client))
    one_line_error(r, "--max-passes needs --noise")
    assert client.sessions() == []
