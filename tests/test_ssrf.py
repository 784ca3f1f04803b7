"""Attaching by https:// URL cannot reach internal addresses: every spelling of a
loopback, private, link-local or metadata address is refused before any connection is
made (a listener on loopback proves that none reaches it), the answer does not tell an
open port from a closed one, and a fetch has one deadline for all of it."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from test_api_contract import assert_error, call

from francine.adapters import external
from francine.base import errors
from francine.domain import urls


class Listener:
    """A TCP listener on loopback that counts connections (and answers nothing)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)  # held open, silent

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def variants(port: int) -> list[str]:
    p = port
    return [
        f"https://127.0.0.1:{p}/a.obj",
        f"https://localhost:{p}/a.obj",
        f"https://LOCALHOST:{p}/a.obj",
        f"https://localhost.:{p}/a.obj",
        f"HTTPS://127.0.0.1:{p}/a.obj",
        f"https://127.1:{p}/a.obj",
        f"https://2130706433:{p}/a.obj",
        f"https://0x7f000001:{p}/a.obj",
        f"https://0177.0.0.1:{p}/a.obj",
        f"https://0:{p}/a.obj",
        f"https://0.0.0.0:{p}/a.obj",
        f"https://127.0.0.1.:{p}/a.obj",
        f"https://[::1]:{p}/a.obj",
        f"https://[::]:{p}/a.obj",
        f"https://[::ffff:127.0.0.1]:{p}/a.obj",
        f"https://[::ffff:7f00:1]:{p}/a.obj",
        f"https://[::127.0.0.1]:{p}/a.obj",
        f"https://[64:ff9b::7f00:1]:{p}/a.obj",
        f"https://[2002:7f00:1::]:{p}/a.obj",
        f"https://[fe80::1%25lo]:{p}/a.obj",
        # the parser-differential class: what one parser reads as userinfo, another as host
        f"https://example.com\\@127.0.0.1:{p}/a.obj",
        f"https://127.0.0.1:{p}\\@example.com/a.obj",
        f"https://example.com@127.0.0.1:{p}/a.obj",
        f"https://user:pass@127.0.0.1:{p}/a.obj",
        f"https://127.0.0.1:{p}#@example.com/a.obj",
        f"https://127.0.0.1:{p}?@example.com/a.obj",
        f"https://example.com#@127.0.0.1:{p}/a.obj",
        f"https:/\\127.0.0.1:{p}/a.obj",
        f"https:\\\\127.0.0.1:{p}/a.obj",
        f"https://127.0.0.1\t:{p}/a.obj",
        f"https://127.0.0.1:{p}\n/a.obj",
        f" https://127.0.0.1:{p}/a.obj",
        f"https://127.0.0.1%2e:{p}/a.obj",
        f"https://%31%32%37.0.0.1:{p}/a.obj",
        f"https://\uff11\uff12\uff17.0.0.1:{p}/a.obj",  # fullwidth digits
        f"https://\u2460\u2461\u2466.0.0.1:{p}/a.obj",  # circled digits, IDNA-mapped
        f"https://127.0.0.1:{p}:443/a.obj",
        f"https://127.0.0.1:+{p}/a.obj",
        f"https://127.0.0.1: {p}/a.obj",
        "https://169.254.169.254/computeMetadata/v1/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://metadata.google.internal/computeMetadata/v1/",
        "https://10.0.0.1/a.obj",
        "https://192.168.0.1/a.obj",
        "https://100.64.0.1/a.obj",
        "https://224.0.0.1/a.obj",
        "https://255.255.255.255/a.obj",
    ]


def test_no_variant_reaches_an_internal_listener(client, listener):
    sid = client.create_session("ao")["id"]
    for url in variants(listener.port):
        resp = call(client, "POST", f"/v1/sessions/{sid}/resources",
                    json={"name": "a.obj", "url": url})
        err = assert_error(resp, 400)
        assert err["code"] in ("invalid_field", "fetch_failed"), (url, err)
    time.sleep(0.2)
    assert listener.accepted == 0
    assert client.request("GET", f"/v1/sessions/{sid}/resources").json()["resources"] == []


def test_answer_does_not_tell_open_from_closed_ports(client, listener):
    sid = client.create_session("ao")["id"]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    answers = [call(client, "POST", f"/v1/sessions/{sid}/resources",
                    json={"name": "a.obj", "url": f"https://127.0.0.1:{port}/a"}).json()
               for port in (listener.port, closed_port)]
    assert answers[0] == answers[1]
    assert listener.accepted == 0


def test_parse_reads_one_host():
    u = urls.parse("https://Example.COM:8443/a/b.obj?x=1#frag")
    assert (u.host, u.port, u.path) == ("example.com", 8443, "/a/b.obj?x=1")
    assert urls.parse("https://bücher.example/x").host == "xn--bcher-kva.example"
    assert urls.parse("https://[2001:db8::1]/x").host == "2001:db8::1"
    assert urls.parse("gs://my-bucket/dir/a.obj").path == "dir/a.obj"
    for bad in ["https://a..b/x", "https://" + "a" * 64 + ".com/", "https://xn--/x",
                "https://[::1/x", "https://[zz]/x", "https://a:99999/x", "https://a:0/x",
                "https://a:-1/x", "https://a:/x", "gs://UPPER/x", "gs://a/x", "gs://bucket/",
                "gs://bucket", "https://\ud800.com/x", "https://a.com/\ud800",
                "https://a.com/\u00e9", "file:///etc/passwd", "http://a.com/",
                "https://a_b.com/x", "https://-a.com/x"]:
        with pytest.raises(errors.BadRequest):
            urls.parse(bad)


def test_fetch_has_one_total_deadline(listener, monkeypatch):
    """A server that accepts and never answers is cut off at the deadline of the whole
    fetch. (Only here, in this process, is loopback let through the address check.)"""
    monkeypatch.setattr(external, "resolve_public", lambda host, port: "127.0.0.1")
    t0 = time.monotonic()
    with pytest.raises(errors.BadRequest) as info:
        list(external.open_url(f"https://example.com:{listener.port}/a", None, 1 << 20,
                               deadline_s=1.0))
    elapsed = time.monotonic() - t0
    assert info.value.code == "fetch_failed" and info.value.message == urls.FETCH_FAILED
    assert listener.accepted == 1  # it did connect, to the pinned address
    assert elapsed < 3.0, elapsed
