"""The viewer in a real browser: Debian's headless Chromium driven by Playwright against
the local stack. Enter a key, create a session, render, see an image; drag the camera,
see another image; a second move while the first renders cancels it; download the
result. Screenshots go to
artifacts/viewer/ (FRANCINE_ARTIFACTS overrides)."""

from __future__ import annotations

import os
import pathlib
import time

import pytest

from tests.conftest import REPO

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

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


@pytest.fixture
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: emulators/setup.sh installs Debian's chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


def shown(page, other_than: tuple[str, ...] = ()) -> tuple[str, list[int]]:
    """(execution, pixels) of the final image the viewer shows, once it shows the final
    image of an execution not in ``other_than``."""
    page.wait_for_function(
        "(old) => { const f = document.getElementById('frame');"
        " return f.dataset.final === '1' && !old.includes(f.dataset.execution)"
        " && f.complete && f.naturalWidth > 0; }", arg=list(other_than), timeout=60_000)
    return page.get_attribute("#frame", "data-execution"), page.evaluate(PIXELS)


def test_render_and_orbit_in_the_browser(browser, stack, client):
    artifacts = pathlib.Path(os.environ.get("FRANCINE_ARTIFACTS", REPO / "artifacts")) / "viewer"
    artifacts.mkdir(parents=True, exist_ok=True)
    key = client.session.headers["Authorization"].split()[1]
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    t0 = time.monotonic()
    page.goto(stack.info["api_url"] + "/viewer")
    page.fill("#key", key)
    page.click("#key-use")
    page.wait_for_selector("#app:not(.hidden)")
    page.fill("#width", "128")
    page.fill("#height", "128")
    page.click("#create")
    page.wait_for_function("() => document.getElementById('sessions').options.length === 1")
    page.fill("#parallel", "8")
    page.fill("#tile", "64")
    page.click("#render")
    first, before = shown(page)
    page.screenshot(path=str(artifacts / "1-rendered.png"))
    assert len(before) == 128 * 128
    assert max(before) > 50 and len(set(before)) > 20  # a picture, not a blank
    sid = page.eval_on_selector("#sessions", "s => s.value")
    with page.expect_download() as download:
        page.click("#download")
    saved = pathlib.Path(download.value.path()).read_bytes()
    assert saved == client.result(sid, first)

    box = page.locator("#frame").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def drag(dx: float, dy: float) -> None:
        page.mouse.move(cx, cy)
        page.mouse.down()
        page.mouse.move(cx + dx / 2, cy + dy / 2)
        page.mouse.move(cx + dx, cy + dy)
        page.mouse.up()

    drag(120, 30)
    # A second move at once: the render of the first is cancelled.
    page.wait_for_function("() => { const s = window.francine.lastStatus;"
                           f" return s && s.id !== '{first}'; }}")
    interrupted = page.evaluate("() => window.francine.lastStatus.id")
    drag(-60, 40)
    second, after = shown(page, (first, interrupted))
    page.screenshot(path=str(artifacts / "2-orbited.png"))
    assert second not in (first, interrupted)
    assert len(after) == len(before)
    changed = sum(abs(a - b) > 16 for a, b in zip(before, after, strict=True))
    assert changed > len(before) // 10, "the camera move did not change the picture"

    deadline = time.monotonic() + 30
    while client.execution(sid, interrupted)["status"] not in ("cancelled", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert client.execution(sid, interrupted)["status"] == "cancelled"
    assert all(key not in u for u in urls), "the API key appeared in a URL"
    moves = page.evaluate("() => window.francine.moves")
    print(f"\nviewer: move→first preview {[round(m) for m in moves]} ms; "
          f"test {time.monotonic() - t0:.1f} s; screenshots in {artifacts}")
