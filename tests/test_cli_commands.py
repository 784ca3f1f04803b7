"""The CLI against the session's stack (``--api``/``--key``): sessions and executions by
id, render's checks before rendering, Ctrl-C, and one clear line for every ordinary
mistake (never a traceback)."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

from PIL import Image

from francine.tools.local.processes import free_port

FRANCINE = [sys.executable, "-m", "francine.tools.cli"]
SMALL = {"producer": "ao", "scene": {"width": 32, "height": 24, "nao_samples": 2}}


def run(*argv, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([*FRANCINE, *argv], capture_output=True, text=True, timeout=timeout)


def api(client) -> list[str]:
    return ["--api", client.api_url, "--key", client.session.headers["Authorization"][7:]]


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_render_writes_the_format_that_o_names_and_reuses_a_session(client, tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SMALL))
    out = tmp_path / "out.jpg"
    r = run("render", str(scene), "-o", str(out), "--parallel", "2", *api(client))
    assert r.returncode == 0, r.stderr
    sid, eid = r.stdout.split()[1], r.stdout.split()[3]
    assert r.stdout.startswith(f"session {sid}  execution {eid}")
    assert Image.open(io.BytesIO(out.read_bytes())).format == "JPEG"
    assert client.get_session(sid)["format"] == "jpeg"

    again = tmp_path / "again.jpg"
    r = run("render", "--session", sid, "-o", str(again), "--parallel", "1", *api(client))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == sid and r.stdout.split()[3] != eid
    assert len(client.executions(sid)) == 2
    # The session renders JPEG: a .png output is refused before anything renders.
    r = run("render", "--session", sid, "-o", str(tmp_path / "x.png"), *api(client))
    one_line_error(r, "jpeg", "png")
    assert len(client.executions(sid)) == 2


def test_render_refuses_before_rendering(client, tmp_path):
    r = run("render", "ao", "-o", str(tmp_path / "out.tif"), *api(client))
    one_line_error(r, ".tif", ".png")
    r = run("render", "ao", "-o", str(tmp_path / "missing" / "out.png"), *api(client))
    one_line_error(r, "does not exist")
    r = run("render", "ao", "-o", str(tmp_path / "out.png"), "--format", "exr", *api(client))
    one_line_error(r, "exr")
    r = run("render", str(tmp_path / "nope.json"), "-o", str(tmp_path / "o.png"), *api(client))
    one_line_error(r, "no such scene file")
    assert client.sessions() == []  # nothing was created


def test_sessions_and_executions_by_id(client, tmp_path):
    sid = client.create_session("ao", SMALL["scene"])["id"]
    eid = client.execute(sid, parallel=2)["id"]
    r = run("executions", "watch", eid, *api(client))
    assert r.returncode == 0, r.stderr
    assert "100.0%" in r.stderr and "producing" in r.stdout

    r = run("sessions", "ls", *api(client))
    assert r.returncode == 0 and sid in r.stdout and "ao" in r.stdout
    r = run("sessions", "show", sid, *api(client))
    assert json.loads(r.stdout)["id"] == sid
    r = run("executions", "ls", sid, *api(client))
    assert eid in r.stdout and "done" in r.stdout
    r = run("executions", "status", f"{sid}/{eid}", *api(client))
    assert json.loads(r.stdout)["status"] == "done"
    out = tmp_path / "result.png"
    r = run("executions", "result", eid, "-o", str(out), *api(client))
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == client.result(sid, eid)
    r = run("executions", "result", eid, "-o", str(tmp_path / "r.exr"), *api(client))
    one_line_error(r, "png", "exr")

    # Long enough (64 passes of 1024², seconds of work) that the cancel comes first.
    big = client.execute(sid, parallel=64, update={"width": 1024, "height": 1024,
                                                    "nao_samples": 16})["id"]
    r = run("executions", "cancel", big, *api(client))
    assert r.returncode == 0 and "cancelled" in r.stdout
    assert client.execution(sid, big)["status"] == "cancelled"
    r = run("executions", "status", "0123abcd", *api(client))
    one_line_error(r, "no execution 0123abcd")

    r = run("sessions", "rm", sid, *api(client))
    assert r.returncode == 0
    assert client.sessions() == []
    r = run("sessions", "show", sid, *api(client))
    one_line_error(r, "not found", "404")


def test_ctrl_c_cancels_the_render(client, tmp_path):
    # Seconds of work a pass (the default scene takes tens of milliseconds): the Ctrl-C
    # comes while it renders.
    scene = tmp_path / "slow.json"
    scene.write_text(json.dumps({"nsubsamples": 2, "nao_samples": 16}))
    p = subprocess.Popen([*FRANCINE, "render", str(scene), "--producer", "ao",
                          "-o", str(tmp_path / "o.png"), "--parallel", "16", *api(client)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    sid, eid = line.split()[1], line.split()[3]
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "Traceback" not in err and f"execution {eid} cancelled" in err
    assert client.execution(sid, eid)["status"] == "cancelled"
    assert not (tmp_path / "o.png").exists()


def test_ordinary_mistakes_are_one_line(client, tmp_path):
    r = run("sessions", "ls", "--api", client.api_url, "--key", "fr_wrong")
    one_line_error(r, "refused the key")
    port = free_port()
    r = run("sessions", "ls", "--api", f"http://127.0.0.1:{port}", "--key", "k")
    one_line_error(r, "cannot connect", str(port))
    r = run("--state-dir", str(tmp_path), "sessions", "ls")
    one_line_error(r, "no running stack", "francine stack up")
    r = run("render", "ao", "-o", str(tmp_path / "o.png"), "--resource", "a=/no/such/file",
            *api(client))
    one_line_error(r, "/no/such/file")


def test_help_names_every_default():
    r = run("render", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for option in ("--parallel", "--tile", "--session", "--format", "--api", "--key"):
        assert option in text
    assert "(default: 8)" in text and "(default: None)" not in text
    r = run("stack", "up", "--help")
    assert "(default: 2)" in " ".join(r.stdout.split())


def test_progress_says_workers_are_starting_then_an_eta():
    from francine.tools.terminal import Progress

    def status(state, progress, running):
        return {"status": state, "progress": progress,
                "tasks": {"done": int(progress * 10), "total": 10, "running": running}}

    p = Progress(stream=io.StringIO())
    assert p.eta(status("queued", 0.0, 0)) == ""  # not yet a second
    p.t0 -= 3
    assert "workers starting" in p.eta(status("queued", 0.0, 0))
    assert p.eta(status("running", 0.0, 2)) == ""  # they run now
    assert p.eta(status("running", 0.2, 2)) == ""  # a first measure
    p.first = (p.first[0] - 2.0, 0.2)  # 2 s ago at 20 %
    eta = p.eta(status("running", 0.6, 2))  # 40 % in 2 s: 2 s to go
    assert eta.strip() == "ETA 2 s"
    assert p.eta(status("done", 1.0, 0)) == ""


def test_render_noise_caps_and_seed_go_into_the_request(client, tmp_path):
    scene = tmp_path / "scene.json"
    scene.write_text(json.dumps(SMALL))
    out = tmp_path / "noise.png"
    r = run("render", str(scene), "-o", str(out), "--parallel", "2", "--noise", "0.05",
            "--max-passes", "8", "--max-cpu-seconds", "600", "--seed", "7", *api(client))
    assert r.returncode == 0, r.stderr
    sid, eid = r.stdout.split()[1], r.stdout.split()[3]
    status = client.execution(sid, eid)
    assert status["until"] == {"noise": 0.05, "max_passes": 8}
    assert status["seed"] == 7 and status["max_cpu_seconds"] == 600
    assert status["max_cost_usd"] is None
    assert status["stopped"] in ("noise", "max_passes")
    assert 2 <= status["passes"] <= 8
    assert out.read_bytes() == client.result(sid, eid)
    # the summary says the passes, and why the waves stopped
    assert f"passes {status['passes']}" in r.stdout and "stopped: " in r.stdout


def test_render_option_mistakes_are_one_line(client, tmp_path):
    out = str(tmp_path / "o.png")
    one_line_error(run("render", "ao", "-o", out, "--max-passes", "8", *api(client)),
                   "--max-passes needs --noise")
    # A cap under the estimate: refused before anything renders (the session goes again).
    one_line_error(run("render", "ao", "-o", out, "--max-cpu-seconds", "1e-9", *api(client)),
                   "over_cap")
    assert client.sessions() == []
    for bad in (["--noise", "0"], ["--seed", "-1"], ["--max-cost", "nan"]):
        r = run("render", "ao", "-o", out, *bad, *api(client))
        assert r.returncode == 2 and "Traceback" not in r.stderr and bad[0] in r.stderr


def test_executions_extend_equals_one_render_of_all_the_passes(client, tmp_path):
    sid = client.create_session("ao", SMALL["scene"])["id"]
    eid = client.execute(sid, parallel=2, seed=11)["id"]
    assert client.wait(sid, eid, timeout_s=60)["status"] == "done"
    out = tmp_path / "more.png"
    r = run("executions", "extend", eid, "--passes", "3", "-o", str(out), *api(client))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"session {sid}  execution {eid}")
    assert "passes 5" in r.stderr  # the progress line
    status = client.execution(sid, eid)
    assert status["status"] == "done" and status["passes"] == 5 and status["waves"] >= 1
    assert out.read_bytes() == client.result(sid, eid)
    assert f"wrote {out}" in r.stdout and "passes 5" in r.stdout

    once = client.execute(sid, parallel=5, seed=11)["id"]
    assert client.wait(sid, once, timeout_s=60)["status"] == "done"
    assert client.result(sid, once) == out.read_bytes()

    # a noise target over what is there: more waves, up to max_passes in all
    r = run("executions", "extend", f"{sid}/{eid}", "--noise", "0.001", "--max-passes", "9",
            *api(client))
    assert r.returncode == 0, r.stderr
    status = client.execution(sid, eid)
    assert 5 < status["passes"] <= 9 and status["stopped"] in ("noise", "max_passes")


def test_executions_extend_refusals_are_one_line(client, tmp_path):
    sid = client.create_session("ao", SMALL["scene"])["id"]
    eid = client.execute(sid, parallel=2)["id"]
    assert client.wait(sid, eid, timeout_s=60)["status"] == "done"
    r = run("executions", "extend", eid, "--passes", "4096", *api(client))
    one_line_error(r, "invalid_field")
    r = run("executions", "extend", eid, "--passes", "2", "-o", str(tmp_path / "x.exr"),
            *api(client))
    one_line_error(r, "png", "exr")
    # Long enough (64 passes of 1024²) to be cancelled before it is done.
    big = client.execute(sid, parallel=64, update={"width": 1024, "height": 1024,
                                                    "nao_samples": 16})["id"]
    client.cancel(sid, big)
    one_line_error(run("executions", "extend", big, "--passes", "1", *api(client)),
                   "not_done", "409")
    r = run("executions", "extend", eid, *api(client))  # neither --passes nor --noise
    assert r.returncode == 2 and "--passes" in r.stderr
    r = run("executions", "extend", eid, "--passes", "2", "--noise", "0.1", *api(client))
    assert r.returncode == 2 and "not allowed with" in r.stderr
    assert client.execution(sid, eid)["passes"] == 2


def test_progress_and_summary_say_passes_and_noise():
    from francine.tools.cli import summary
    from francine.tools.client import wave_fields
    from francine.tools.terminal import WaveProgress, waves_text

    status = {"status": "running", "progress": 0.5, "parallel": 8,
              "tasks": {"done": 5, "total": 10, "running": 2},
              "time": {k: None for k in ("total", "fetching", "producing", "reducing")},
              "passes": 16, "noise": 0.0234567, "stopped": None, "waves": 1,
              "spent": {"cpu_seconds": 1.5, "usd": 0.00012},
              "until": {"noise": 0.02, "max_passes": 64}}
    assert waves_text(status) == "  passes 16  noise 0.02346"
    stream = io.StringIO()
    WaveProgress(stream=stream)(status)
    assert "passes 16  noise 0.02346" in stream.getvalue()
    text = summary({**status, "status": "done", "stopped": "noise"})
    assert "passes 16 (1 more wave) | noise 0.02346 (target 0.02) | stopped: noise" in text
    assert "1.500 CPU-s" in text and "$0.000120" in text
    # a status without them (an older api) shows what it always did
    plain = {k: v for k, v in status.items()
             if k not in ("passes", "noise", "stopped", "waves", "spent", "until")}
    assert waves_text(plain) == "" and "\n" not in summary(plain)
    assert wave_fields() == {}
    assert wave_fields(0.02, 64, 1.5, None, 0) == {
        "until": {"noise": 0.02, "max_passes": 64}, "max_cost_usd": 1.5, "seed": 0}


def test_executions_status_is_what_the_openapi_document_says(client):
    """The status JSON (``executions status``) of a plain, a waved and an extended
    render against the Execution schema that /v1/openapi.json serves."""
    import jsonschema
    import referencing
    import referencing.jsonschema
    import requests

    doc = requests.get(client.api_url + "/v1/openapi.json", timeout=10).json()
    registry = referencing.Registry().with_resource("urn:francine", referencing.Resource(
        doc, referencing.jsonschema.DRAFT202012))
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:francine#/components/schemas/Execution"}, registry=registry)

    def status_of(ref: str) -> dict:
        r = run("executions", "status", ref, *api(client))
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    sid = client.create_session("ao", SMALL["scene"])["id"]
    plain = client.execute(sid, parallel=2)["id"]
    waved = client.execute(sid, parallel=2, until={"noise": 0.5, "max_passes": 4},
                           max_cpu_seconds=600.0)["id"]
    for eid in (plain, waved):
        assert client.wait(sid, eid, timeout_s=60)["status"] == "done"
    client.extend(sid, plain, passes=1)
    assert client.wait(sid, plain, timeout_s=60)["status"] == "done"
    for eid in (plain, waved):
        status = status_of(f"{sid}/{eid}")
        errors = [f"{'.'.join(map(str, e.path))}: {e.message}"
                  for e in validator.iter_errors(status)]
        assert not errors, (eid, errors)
        for field in ("passes", "noise", "stopped", "waves", "spent", "seed", "until",
                      "max_cost_usd", "max_cpu_seconds"):
            assert field in status, field


def test_ctrl_c_leaves_an_extension_running(client):
    # Seconds of work a pass: the Ctrl-C comes while the added passes render.
    sid = client.create_session("ao", {"nsubsamples": 2, "nao_samples": 16})["id"]
    eid = client.execute(sid, parallel=1)["id"]
    assert client.wait(sid, eid, timeout_s=120)["status"] == "done"
    p = subprocess.Popen([*FRANCINE, "executions", "extend", eid, "--passes", "8",
                          *api(client)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().startswith(f"session {sid}  execution {eid}  extended")
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130
    assert "Traceback" not in err and "the extension goes on" in err
    status = client.wait(sid, eid, timeout_s=120)
    assert status["status"] == "done" and status["passes"] == 9
