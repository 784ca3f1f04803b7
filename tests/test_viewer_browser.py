"""The viewer in a real browser: Debian's headless Chromium driven by Playwright against
the local stack.

- Enter a key (a wrong one first: its error goes away once the right one works), see a
  placeholder rather than a broken image, create a session, render, see the image at
  its own aspect ratio, scale it (buttons, Ctrl + wheel) without rendering again.
- Drag the camera, see another image, never a blank or a black one in between; a second
  move while the first renders cancels it; the wheel moves the camera.
- The jobs of the session with status, progress, time, CPU cost; clicking one shows it;
  its tasks; download its result with a button (session-execution.png).
- Errors clear themselves: after the next action that succeeds, and after a while.
- A job's tasks with a failed pass first, with their errors; a large result that the api
  redirects to storage is followed without the key.
- A Blender session made from a folder (the .blend, its texture, a file whose name needs
  quoting), rendered; "New session" for blender needs the files first; a folder whose
  .blend is unreadable leaves no session behind.
- An animation rendered by the stack: the frame slider over its finished frames, each
  frame's image, the preview video.
- A finished render refined with a button: as many passes again into the same job,
  followed like a new render, the last image shown until the refined one arrives
  (viewer-refine.png).

Screenshots go to $FRANCINE_SCREENSHOTS (default: the test's tmp_path): viewer-*.png.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1360, "height": 860}

# Gray values of the image shown, read back through a canvas (the blob: URL is ours).
PIXELS = """() => {
  const img = document.getElementById('frame');
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  const out = [];
  for (let i = 0; i < d.length; i += 4) out.push(d[i]);
  return out;
}"""

# Counts, at every animation frame, the moments the preview is not a decoded image.
WATCH_BLANKS = """() => {
  window.blanks = 0; window.watching = true;
  const f = document.getElementById('frame');
  const tick = () => {
    if (f.classList.contains('hidden') || !f.complete || f.naturalWidth === 0
        || f.getBoundingClientRect().width === 0) window.blanks += 1;
    if (window.watching) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: emulators/setup.sh installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path) -> pathlib.Path:
    folder = pathlib.Path(os.environ.get("FRANCINE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Viewer:
    """A page of the viewer, the URLs it asked for and the headers it sent."""

    def __init__(self, browser, stack, client):
        self.key = client.session.headers["Authorization"].split()[1]
        self.client = client
        self.page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        self.requests = []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.goto(stack.info["api_url"] + "/viewer")

    def sign_in(self) -> None:
        self.page.fill("#key", self.key)
        self.page.click("#key-use")
        self.page.wait_for_selector("#app:not(.hidden)")

    def shown(self, other_than: tuple[str, ...] = ()) -> tuple[str, list[int]]:
        """(execution, pixels) of the final image the viewer shows, once it shows the
        final image of an execution not in ``other_than``."""
        self.page.wait_for_function(
            "(old) => { const f = document.getElementById('frame');"
            " return f.dataset.final === '1' && !old.includes(f.dataset.execution)"
            " && f.complete && f.naturalWidth > 0; }", arg=list(other_than), timeout=90_000)
        return self.page.get_attribute("#frame", "data-execution"), self.page.evaluate(PIXELS)

    def box(self, selector: str) -> dict:
        return self.page.locator(selector).bounding_box()

    def message(self) -> tuple[str, bool]:
        """(text, is an error) of the message line."""
        return (self.page.inner_text("#message").replace("×", "").strip(),
                self.page.eval_on_selector("#message", "m => m.classList.contains('error')"))

    def no_key_in_urls(self) -> None:
        assert all(self.key not in r.url for r in self.requests), "the key was in a URL"

    def close(self) -> None:
        self.no_key_in_urls()
        self.page.close()


@pytest.fixture
def viewer(browser, stack, client):
    v = Viewer(browser, stack, client)
    yield v
    v.close()


def current_session(page) -> str:
    return page.eval_on_selector("#sessions", "s => s.value")


def job_rows(page) -> list[dict]:
    return page.eval_on_selector_all("#jobs tbody tr", """rows => rows.map(r => ({
        id: r.dataset.execution, selected: r.classList.contains('selected'),
        cells: [...r.cells].map(c => c.innerText.trim())}))""")


def test_render_orbit_zoom_jobs_download_and_errors(viewer, client, shots):
    page = viewer.page
    t0 = time.monotonic()

    # A wrong key: a clear error, which the right key's success takes away.
    page.fill("#key", "not-a-key")
    page.click("#key-use")
    page.wait_for_selector("#message.error")
    assert "unknown API key" in viewer.message()[0]
    viewer.sign_in()
    page.wait_for_function("() => !document.getElementById('message').classList"
                           ".contains('error')")

    # Before any render: a placeholder text, no image element on show (no broken icon).
    assert page.is_visible("#placeholder") and not page.is_visible("#frame")
    assert page.get_attribute("#frame", "src") is None
    assert page.inner_text("#placeholder").strip()

    # A 160×96 session: the image keeps its 5:3 shape whatever the stage's.
    page.fill("#width", "160")
    page.fill("#height", "96")
    page.click("#create")
    page.wait_for_function("() => document.getElementById('sessions').options.length === 1"
                           " && document.getElementById('sessions').value")
    sid = current_session(page)
    assert "ao 160×96" in page.inner_text("#sessions")  # a label, not a raw id
    assert not page.is_visible("#frame")
    page.fill("#parallel", "4")
    page.fill("#tile", "64")
    page.click("#render")
    first, before = viewer.shown()
    assert len(before) == 160 * 96
    assert max(before) > 50 and len(set(before)) > 20  # a picture, not a blank

    frame, stage = viewer.box("#frame"), viewer.box("#stage")
    assert abs(frame["width"] / frame["height"] - 160 / 96) < 0.01
    assert frame["width"] > 160 * 1.5  # fitted to the stage, not left tiny
    assert frame["x"] >= stage["x"] and frame["x"] + frame["width"] <= stage["x"] + stage["width"]
    assert frame["y"] >= stage["y"] and frame["y"] + frame["height"] <= stage["y"] + stage["height"]
    fitted = frame["width"]
    page.screenshot(path=str(shots / "viewer-aspect.png"))

    # Scaling the picture renders nothing: buttons and Ctrl + wheel.
    executions = len(client.executions(sid))
    page.click("#zoom-in")
    assert abs(viewer.box("#frame")["width"] - fitted * 1.25) < 2
    page.click("#zoom-1")
    one = viewer.box("#frame")
    assert abs(one["width"] - 160) < 1 and abs(one["height"] - 96) < 1
    assert page.inner_text("#zoom-level") == "100%"
    page.mouse.move(one["x"] + 80, one["y"] + 48)
    page.keyboard.down("Control")
    page.mouse.wheel(0, -200)
    page.keyboard.up("Control")
    page.wait_for_function("() => document.getElementById('frame').getBoundingClientRect()"
                           ".width > 170")
    page.click("#zoom-fit")
    assert abs(viewer.box("#frame")["width"] - fitted) < 1
    assert len(client.executions(sid)) == executions

    # The jobs list: status, progress (and passes), time, cost in CPU-seconds, no frames.
    page.wait_for_function("(id) => { const r = document.querySelector("
                           "`#jobs tr[data-execution='${id}']`);"
                           " return r && r.innerText.includes('done'); }", arg=first)
    [row] = job_rows(page)
    started, status, progress, took, cost, frames = row["cells"]
    assert row["id"] == first and row["selected"]
    assert status == "done" and progress.splitlines()[0].endswith("100%")
    assert progress.splitlines()[1].startswith("4 passes")
    assert took.endswith(" s") and cost.endswith(" cpu s") and float(cost.split()[0]) > 0
    assert frames == "–"
    assert first in page.inner_text("#job-fields")

    # A real button downloads the result under <session>-<execution>.png.
    assert page.eval_on_selector("#download", "b => b.tagName") == "BUTTON"
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == f"{sid}-{first}.png"
    assert pathlib.Path(download.value.path()).read_bytes() == client.result(sid, first)

    # An error (a tile under 8 px) goes away at the next action that succeeds...
    page.fill("#tile", "4")
    page.click("#render")
    page.wait_for_selector("#message.error")
    assert "tile" in viewer.message()[0]
    page.fill("#tile", "64")
    page.click("#refresh")
    page.wait_for_function("() => !document.getElementById('message').classList"
                           ".contains('error')")
    # ... and by itself after a while (8 s; shortened here).
    page.evaluate("() => { window.francine.errorMs = 300; }")
    page.click("#zoom-fit")
    page.fill("#tile", "4")
    page.click("#render")
    page.wait_for_selector("#message.error")
    page.wait_for_function("() => !document.getElementById('message').textContent",
                           timeout=5_000)
    page.evaluate("() => { window.francine.errorMs = 8000; }")
    page.fill("#tile", "64")
    assert len(client.executions(sid)) == executions

    # Orbit: the last image stays until the next is decoded and has no black region.
    box = viewer.box("#frame")
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def drag(dx: float, dy: float) -> None:
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + dx / 2, cy + dy / 2)
        page.mouse.move(cx + dx, cy + dy)
        page.mouse.up()

    swaps_before = page.evaluate("() => window.francine.swaps.length")
    page.evaluate(WATCH_BLANKS)
    drag(120, 30)
    # A second move at once: the render of the first is cancelled.
    page.wait_for_function("() => { const s = window.francine.lastStatus;"
                           f" return s && s.id !== '{first}'; }}")
    interrupted = page.evaluate("() => window.francine.lastStatus.id")
    drag(-60, 40)
    second, after = viewer.shown((first, interrupted))
    page.evaluate("() => { window.watching = false; }")
    assert page.evaluate("() => window.blanks") == 0, "the preview went blank while orbiting"
    swaps = page.evaluate("() => window.francine.swaps")[swaps_before:]
    assert swaps and all(s["final"] or s["passes"] > 0 for s in swaps), swaps
    assert second not in (first, interrupted)
    assert len(after) == len(before)
    changed = sum(abs(a - b) > 16 for a, b in zip(before, after, strict=True))
    assert changed > len(before) // 10, "the camera move did not change the picture"

    # The wheel on the picture moves the camera: one more render.
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -120)
    third, _ = viewer.shown((first, interrupted, second))

    deadline = time.monotonic() + 30
    while client.execution(sid, interrupted)["status"] not in ("cancelled", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.execution(sid, interrupted)["status"] == "cancelled"

    # Every job is listed; clicking the first shows it again, with its tasks.
    page.click("#jobs-refresh")
    page.wait_for_function("(id) => document.querySelectorAll('#jobs tbody tr').length === 4"
                           " && document.querySelector(`#jobs tr[data-execution='${id}']`)"
                           ".innerText.includes('cancelled')", arg=interrupted)
    rows = {r["id"]: r for r in job_rows(page)}
    assert set(rows) == {first, interrupted, second, third}
    assert rows[interrupted]["cells"][1] == "cancelled"
    page.click(f"#jobs tr[data-execution='{first}']")
    page.wait_for_function("(id) => document.getElementById('frame').dataset.execution === id"
                           " && document.getElementById('frame').dataset.final === '1'",
                           arg=first)
    assert page.evaluate(PIXELS) == before
    assert {r["id"] for r in job_rows(page) if r["selected"]} == {first}
    page.wait_for_function("() => document.getElementById('tasks-note').textContent"
                           ".includes('No task of this job has failed')")
    page.screenshot(path=str(shots / "viewer-jobs.png"))
    moves = page.evaluate("() => window.francine.moves")
    print(f"\nviewer: move→first preview {[round(m) for m in moves]} ms; "
          f"test {time.monotonic() - t0:.1f} s; screenshots in {shots}")


def test_tasks_with_failed_passes_and_a_redirected_result(viewer, stack, adapters, client,
                                                          shots):
    """A job made elsewhere (the client): its tasks with a failed pass come first, with
    their errors. Its EXR result is over the api's response limit: the page follows the
    redirect to storage without the key."""
    from francine.domain import planning

    page = viewer.page
    # Few passes of many rays: noise that ZIP does not squeeze under the 512 KiB limit.
    sid = client.create_session("ao", {"width": 768, "height": 768, "nao_samples": 6},
                                fmt="exr")["id"]
    eid = client.execute(sid, parallel=4, tile=384)["id"]
    assert client.wait(sid, eid, timeout_s=90)["status"] == "done"
    # Two passes that failed, as the pipeline leaves them: one replaced with a fresh seed
    # (done again), one failed for good.
    for node, fields in (
            ("p5", {"failures": 1, "generation": 1,
                    "error": "RuntimeError: cosmic ray at seed 1234"}),
            ("p2", {"status": "failed", "failures": 2, "generation": 1,
                    "error": "MemoryError: out of memory\n  in tile 0,0"})):
        adapters.store.update_task(sid, eid, planning.task_id(eid, node), fields)
    redirect = client.request("GET", f"/v1/sessions/{sid}/executions/{eid}/result",
                              allow_redirects=False)
    assert redirect.status_code == 307

    viewer.sign_in()
    # The newest session and its newest job open by themselves.
    page.wait_for_function("(id) => document.getElementById('frame').dataset.execution === id"
                           " && document.getElementById('frame').dataset.final === '1'",
                           arg=eid)
    page.wait_for_selector("#tasks tbody tr[data-node]")
    nodes = page.eval_on_selector_all("#tasks tbody tr[data-node]", "rs => rs.map(r => ["
                                      "r.dataset.node, r.cells[1].innerText.trim(),"
                                      " r.cells[5].innerText.trim()])")
    # The tasks with a failed pass first, then every other task of the job.
    assert [n[:2] for n in nodes[:2]] == [["p2", "failed"], ["p5", "done"]], nodes
    assert nodes[0][2].endswith("2 failed · 1 replaced"), nodes
    assert nodes[1][2].endswith("1 failed · 1 replaced"), nodes
    total = client.execution(sid, eid)["tasks"]["total"]
    assert len(nodes) == total and {n[1] for n in nodes[2:]} == {"done"}, nodes
    instances = page.eval_on_selector_all("#tasks tbody tr[data-node]",
                                          "rs => rs.map(r => r.cells[2].innerText.trim())")
    assert all(i != "–" for i in instances[2:]), instances  # where each ran
    logs = page.eval_on_selector_all("#tasks pre.log", "ps => ps.map(p => p.textContent)")
    assert logs == ["MemoryError: out of memory\n  in tile 0,0",
                    "RuntimeError: cosmic ray at seed 1234"]
    assert "failed pass" in page.inner_text("#tasks-note")
    page.screenshot(path=str(shots / "viewer-tasks.png"))
    # A click on a task shows the lines its worker logged; another click hides them.
    page.click("#tasks tbody tr[data-node='p0']")
    line = page.wait_for_selector("#tasks tr.task-log[data-node='p0'] pre:has-text('rendered')")
    assert f"rendered {sid}/{eid}/p0" in line.text_content()
    page.screenshot(path=str(shots / "viewer-task-log.png"))
    page.click("#tasks tbody tr[data-node='p0']")
    page.wait_for_selector("#tasks tr.task-log", state="detached")

    # The download follows the 307 to the storage emulator, without the key; the
    # emulator sends no CORS header, so the page says why it cannot save the file.
    storage = stack.info["emulators"]["STORAGE_EMULATOR_HOST"].rstrip("/")
    page.click("#download")
    page.wait_for_selector("#message.error", timeout=15_000)
    assert "storage" in viewer.message()[0] and "CORS" in viewer.message()[0]
    to_storage = [r for r in viewer.requests if r.url.startswith(storage)]
    assert to_storage, "the redirect was not followed"
    for r in to_storage:
        assert "authorization" not in {k.lower() for k in r.all_headers()}
        assert viewer.key not in json.dumps(r.all_headers())


def make_folder(root: pathlib.Path) -> pathlib.Path:
    """A .blend with a texture beside it (written by bpy in a process of its own), a
    note whose name needs quoting, and files the page leaves out."""
    folder = root / "shot"
    folder.mkdir()
    subprocess.run([sys.executable, "-m", "francine.producers.blender.examples", "demo.blend",
                    "--width", "64", "--height", "48", "--texture", "textures/checker.png"],
                   cwd=folder, check=True, capture_output=True, timeout=120)
    (folder / "textures" / "notes 1, draft #2.txt").write_text("lighting: warmer\n")
    (folder / ".DS_Store").write_bytes(b"\0junk")
    (folder / "demo.blend1").write_bytes(b"a backup")
    return folder


def test_blender_session_from_a_folder(viewer, client, shots, tmp_path):
    pytest.importorskip("bpy")
    page = viewer.page
    folder = make_folder(tmp_path)
    viewer.sign_in()

    # Blender without its files: "New session" cannot be pressed, and says why.
    page.select_option("#producer", "blender")
    assert page.is_disabled("#create")
    assert "folder" in page.inner_text("#create-hint")
    assert not page.is_visible("#size-row")

    # Files dropped on the page (a drop of plain files: a test cannot make a browser drop
    # a folder) become the session's files, and the producer becomes blender.
    page.select_option("#producer", "ao")
    page.evaluate("""() => {
        const dt = new DataTransfer();
        dt.items.add(new File(['not a scene'], 'solo.blend'));
        dt.items.add(new File(['x'], '.DS_Store'));
        const drop = document.getElementById('drop');
        drop.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true,
                                                  cancelable: true}));
    }""")
    page.wait_for_function("() => document.getElementById('files-info').textContent"
                           ".includes('1 file')")
    assert page.eval_on_selector("#producer", "p => p.value") == "blender"
    assert page.is_enabled("#create")

    # A folder whose .blend is unreadable: refused, and no session is left behind.
    broken = tmp_path / "broken"
    (broken / "textures").mkdir(parents=True)
    (broken / "scene.blend").write_bytes(b"BLENDER? not really")
    (broken / "textures" / "checker.png").write_bytes((folder / "textures" /
                                                       "checker.png").read_bytes())
    page.set_input_files("#folder", str(broken))
    page.wait_for_function("() => !document.getElementById('create').disabled")
    page.click("#create")
    page.wait_for_selector("#message.error")
    assert "scene.blend" in viewer.message()[0]
    deadline = time.monotonic() + 10
    while client.sessions():
        assert time.monotonic() < deadline, "the unusable session was left behind"
        time.sleep(0.2)

    # The real folder: the .blend, its texture and the note; not the junk.
    page.set_input_files("#folder", str(folder))
    page.wait_for_function("() => document.getElementById('files-info').textContent"
                           ".includes('3 files')")
    listed = page.eval_on_selector_all("#files-info li", "ls => ls.map(l => l.textContent)")
    assert listed == ["demo.blend", "textures/checker.png", "textures/notes 1, draft #2.txt"]
    page.click("#create")
    page.wait_for_function("() => document.getElementById('message').textContent"
                           ".includes('blender session ready')", timeout=60_000)
    assert not viewer.message()[1]  # the earlier error is gone
    [session] = client.sessions()
    sid = session["id"]
    assert current_session(page) == sid
    assert session["producer"] == "blender" and session["scene"]["blend"] == "demo.blend"
    resources = {r["name"]: r["sha256"] for r in client.get_session(sid)["resources"]}
    assert resources == {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("demo.blend", "textures/checker.png", "textures/notes 1, draft #2.txt")}

    page.fill("#parallel", "2")
    page.fill("#tile", "64")
    page.click("#render")
    eid, pixels = viewer.shown()
    assert len(pixels) == 64 * 48 and len(set(pixels)) > 20
    frame = viewer.box("#frame")
    assert abs(frame["width"] / frame["height"] - 64 / 48) < 0.01
    assert client.execution(sid, eid)["status"] == "done"
    page.screenshot(path=str(shots / "viewer-blender.png"))


def test_animation_controls(viewer, client, shots, tmp_path):
    """A Blender animation of 3 frames rendered by the stack: the page shows the frame
    count in the jobs list, a slider over the finished frames that shows each frame's
    image, the preview video, and downloads the frame shown."""
    pytest.importorskip("bpy")
    from PIL import Image

    from francine.producers.blender import examples

    examples.checker_png(tmp_path / "maps" / "checker.png")
    examples.build(tmp_path / "shot.blend", 64, 48, texture="maps/checker.png", frames=3)
    sid = client.create_session("blender", {"blend": "shot.blend", "samples": 1})["id"]
    client.put_resource(sid, "shot.blend", (tmp_path / "shot.blend").read_bytes())
    client.put_resource(sid, "maps/checker.png",
                        (tmp_path / "maps" / "checker.png").read_bytes())
    eid = client.execute(sid, parallel=1, frames="1-3")["id"]
    assert client.wait(sid, eid, timeout_s=120)["frames"]["done"] == 3
    job = f"/v1/sessions/{sid}/executions/{eid}"
    page = viewer.page
    asked = []
    page.on("request", lambda r: asked.append("/" + r.url.split("//", 1)[1].split("/", 1)[1]))
    viewer.sign_in()
    page.wait_for_selector("#animation:not(.hidden)")
    page.wait_for_function("() => document.getElementById('frame-slider').max === '2'")
    assert "3/3" in page.inner_text(f"#jobs tr[data-execution='{eid}']")
    assert page.is_disabled("#refine")  # an animation takes no more passes
    page.eval_on_selector("#frame-slider",
                          "s => { s.value = '1'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.getElementById('frame').dataset.frame === '2'")
    shown = np.array(page.evaluate(PIXELS))
    expected = np.asarray(Image.open(io.BytesIO(client.result(sid, eid, 2))).convert("RGB"))
    assert np.abs(shown - expected[..., 0].ravel().astype(int)).max() <= 1
    assert "frame 2" in page.inner_text("#frame-label")
    page.wait_for_selector("#video:not(.hidden)")
    assert page.eval_on_selector("#video", "v => v.src").startswith("blob:")
    if page.evaluate("() => document.createElement('video')"
                     ".canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"):
        page.wait_for_function("() => document.getElementById('video').videoWidth === 64")
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == f"{sid}-{eid}-0002.png"
    assert {f"{job}/frames", f"{job}/result?frame=2", f"{job}/video"} <= set(asked)
    page.screenshot(path=str(shots / "viewer-animation.png"))


def test_refine_a_finished_render(viewer, client, shots, small_ao):
    """A finished render refined with the Refine button: as many passes again into the
    same job (POST ...:extend), which the page follows as it follows a render it started;
    the last image stays on show until the refined one arrives, which is the job's new
    result; the job shows its passes (and its noise, when the api estimates it)."""
    from PIL import Image

    page = viewer.page
    sid = client.create_session("ao", small_ao)["id"]
    viewer.sign_in()
    page.wait_for_function("(id) => document.getElementById('sessions').value === id", arg=sid)
    assert page.eval_on_selector("#refine", "b => b.tagName") == "BUTTON"
    assert page.is_disabled("#refine")  # no job yet
    page.fill("#parallel", "2")
    page.fill("#tile", "32")
    page.click("#render")
    eid, before = viewer.shown()
    first = client.wait(sid, eid, timeout_s=90)
    assert first["status"] == "done" and "frames" not in first
    assert first["passes"] == 2, first
    old = client.result(sid, eid)
    page.wait_for_function("() => !document.getElementById('refine').disabled")

    swaps_before = page.evaluate("() => window.francine.swaps.length")
    page.evaluate(WATCH_BLANKS)
    with page.expect_response(lambda r: r.url.endswith(":extend")) as answer:
        page.click("#refine")
    assert answer.value.status == 202 and answer.value.json()["status"] == "running"
    page.wait_for_function("(p) => { const s = window.francine.lastStatus;"
                           " return s && s.status === 'done' && s.passes === p; }",
                           arg=2 * first["passes"], timeout=90_000)
    [extend] = [r for r in viewer.requests if r.method == "POST" and ":extend" in r.url]
    assert extend.url.endswith(f"/v1/sessions/{sid}/executions/{eid}:extend")
    assert extend.post_data_json == {"passes": first["passes"]}
    refined = client.execution(sid, eid)
    assert refined["status"] == "done" and refined["passes"] == 2 * first["passes"], refined
    new = client.result(sid, eid)
    assert new != old, "the refined result is the old one"

    # The page shows the refined result, and never a blank or a preview with fewer passes
    # than the image it replaces on the way.
    expected = np.asarray(Image.open(io.BytesIO(new)).convert("RGB"))[..., 0].ravel()
    deadline = time.monotonic() + 30
    while True:
        shown = np.array(page.evaluate(PIXELS))
        if page.get_attribute("#frame", "data-final") == "1" and shown.shape == expected.shape \
                and np.abs(shown - expected.astype(int)).max() <= 1:
            break
        assert time.monotonic() < deadline, "the page does not show the refined result"
        time.sleep(0.2)
    page.evaluate("() => { window.watching = false; }")
    assert page.evaluate("() => window.blanks") == 0, "the preview went blank while refining"
    swaps = page.evaluate("() => window.francine.swaps")[swaps_before:]
    assert swaps and all(s["execution"] == eid and (s["final"] or s["passes"] > first["passes"])
                         for s in swaps), swaps
    assert len(before) == len(shown)

    # The job, in the list and in its details: the passes, and the noise when estimated.
    [row] = job_rows(page)
    assert row["id"] == eid and row["selected"]
    assert row["cells"][1] == "done"
    passes = f"{refined['passes']} passes"
    fields = page.inner_text("#job-fields")
    assert passes in row["cells"][2] and passes in fields
    if refined.get("noise") is not None:
        noise = f"noise {refined['noise'] * 100:.1f}%"
        assert noise in row["cells"][2] and noise in fields
    assert page.is_enabled("#refine")  # done again: it may be refined once more
    page.screenshot(path=str(shots / "viewer-refine.png"))
