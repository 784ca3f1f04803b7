"""The viewer's page as the api serves it: no outside address, no key in a URL, a
strict content security policy."""

from __future__ import annotations

import re

import requests


def test_viewer_page_and_script(stack):
    url = stack.info["api_url"]
    page = requests.get(f"{url}/viewer", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert 'src="/viewer/viewer.js"' in page.text
    assert 'type="password"' in page.text  # the key is typed, not shown
    script = requests.get(f"{url}/viewer/viewer.js", timeout=10)
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    for text in (page.text, script.text):
        # Nothing outside: no absolute URL to fetch anything from.
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
        assert "cdn" not in text.lower()
    # The key goes in a header; no URL the page builds carries it.
    assert 'Authorization: "Bearer " + state.key' in script.text
    assert not re.search(r"[?&](key|api_key|token)=", script.text)


def test_viewer_serves_only_its_files(stack):
    url = stack.info["api_url"]
    for path in ("/viewer/stack.json", "/viewer/..%2fapp.py", "/viewer/__init__.py"):
        resp = requests.get(url + path, timeout=10)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "not_found"
