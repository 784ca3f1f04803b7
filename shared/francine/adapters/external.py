"""Reading external files that a session attaches by URL: ``gs://`` and ``https://``.

Both are streamed in chunks and cut off at the size limit.

``https`` is parsed once, by the strict parser below, and that one reading is used for
everything after it: the host is resolved once, every address it resolves to must be
public (the api runs inside a cloud project: a URL must not make it read the metadata
server or internal services), and the connection goes to the checked address itself,
with the URL's host as ``Host`` header and TLS server name. No redirect is followed, the
whole fetch (connect, headers, body) has one deadline, and a failure to connect answers
the same words whatever the reason, so that the answer does not tell an open port from a
closed one.

``gs://`` objects are read with the api's own credentials; a user may only attach from
the buckets an administrator allowed for that user (``francine users allow-bucket``), so
that nobody can read what another user arranged for Francine to read.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator

from francine.adapters import translated
from francine.base import errors
from francine.domain.urls import FETCH_FAILED, Url, bad_url, is_public, parse

CHUNK = 1 << 20
#: One fetch, from resolving the host to the last byte.
DEADLINE_S = 60.0


def resolve_public(host: str, port: int) -> str:
    """The one address to connect to: every address of ``host`` must be public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise errors.BadRequest(f"url: cannot resolve {host}", "fetch_failed") from e
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise errors.BadRequest(f"url: {host} is not a public address", "fetch_failed")
    return str(addresses[0])


# --- fetching ---------------------------------------------------------------------------

def open_url(url: object, storage_client, limit: int,
             own_buckets: frozenset[str] = frozenset(),
             allowed_buckets: frozenset[str] | None = None,
             deadline_s: float = DEADLINE_S) -> Iterator[bytes]:
    """Chunks of the file at ``url``. ``own_buckets`` are Francine's buckets: the api
    can read them, but a user must not reach other users' images through them.
    ``allowed_buckets``: the buckets this user may attach from (None: any)."""
    u = parse(url)
    if u.scheme == "gs":
        if u.host in own_buckets:
            raise errors.BadRequest("url: Francine's own buckets cannot be attached",
                                    "fetch_failed")
        if allowed_buckets is not None and u.host not in allowed_buckets:
            raise errors.Forbidden(
                f"url: bucket {u.host} is not on your list of allowed buckets (an "
                "administrator adds it with 'francine users allow-bucket')", "bucket_not_allowed")
        return _gcs(storage_client, u.host, u.path, limit)
    return _https(u, limit, deadline_s)


def _gcs(client, bucket: str, name: str, limit: int) -> Iterator[bytes]:
    what = f"gs://{bucket}/{name}"
    try:
        with translated(what):
            blob = client.bucket(bucket).get_blob(name)
    except (errors.NotFound, errors.BadRequest, errors.Conflict) as e:
        raise errors.BadRequest(f"{what} does not exist or is not readable",
                                "fetch_failed") from e
    except errors.TransientError as e:
        # Forbidden, refused and other client errors of the storage api: the object is
        # not there for us; a 5xx of the service stays a 503.
        if getattr(e.__cause__, "code", 500) in range(400, 500):
            raise errors.BadRequest(f"{what} does not exist or is not readable",
                                    "fetch_failed") from e
        raise
    if blob is None:
        raise errors.BadRequest(f"{what} does not exist or is not readable", "fetch_failed")
    if blob.size is not None and blob.size > limit:
        raise errors.too_large("this resource", limit)

    def chunks():
        with translated(what), blob.open("rb", chunk_size=CHUNK) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    return chunks()


class _PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` with ``host`` as Host header, TLS server name and the name
    the certificate must match."""

    def __init__(self, host: str, address: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _https(u: Url, limit: int, deadline_s: float) -> Iterator[bytes]:
    deadline = time.monotonic() + deadline_s
    address = resolve_public(u.host, u.port)
    conn = _PinnedConnection(u.host, address, u.port, timeout=deadline_s)
    # One deadline for the whole fetch: when it passes, the socket is shut down, which
    # ends whatever read is waiting.
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), _shutdown, (conn,))
    timer.daemon = True
    timer.start()
    try:
        conn.request("GET", u.path, headers={"User-Agent": "francine",
                                             "Accept-Encoding": "identity"})
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException, ValueError) as e:
        timer.cancel()
        conn.close()
        raise errors.BadRequest(FETCH_FAILED, "fetch_failed") from e
    if resp.status != 200:
        timer.cancel()
        conn.close()
        raise errors.BadRequest(f"url: the server answered {resp.status} (redirects are not "
                                "followed)", "fetch_failed")
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and int(length) > limit:
        timer.cancel()
        conn.close()
        raise errors.too_large("this resource", limit)

    def chunks():
        try:
            while True:
                if time.monotonic() > deadline:
                    raise errors.BadRequest(f"url: the fetch took more than {deadline_s:.0f} s",
                                            "fetch_failed")
                try:
                    chunk = resp.read1(CHUNK)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    raise errors.BadRequest(FETCH_FAILED, "fetch_failed") from e
                if not chunk:
                    if time.monotonic() > deadline:  # cut off by the timer
                        raise errors.BadRequest(
                            f"url: the fetch took more than {deadline_s:.0f} s", "fetch_failed")
                    return
                yield chunk
        finally:
            timer.cancel()
            conn.close()

    return chunks()


def post(url: object, body: bytes, headers: dict[str, str], deadline_s: float) -> int:
    """POST ``body`` to an https ``url`` (a webhook) under the same rules as fetches: one
    parse, one resolution, the checked address connected to, no redirects, one deadline.
    Returns the status; BadRequest if the address may not be called, OSError-like
    failures as ``errors.TransientError``."""
    u = parse(url)
    if u.scheme != "https":
        raise bad_url("an https:// URL")
    address = resolve_public(u.host, u.port)
    conn = _PinnedConnection(u.host, address, u.port, timeout=deadline_s)
    timer = threading.Timer(deadline_s, _shutdown, (conn,))
    timer.daemon = True
    timer.start()
    try:
        conn.request("POST", u.path, body=body, headers=headers)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise errors.TransientError(f"{u.host}: no answer ({type(e).__name__})") from e
    finally:
        timer.cancel()
        conn.close()


def _shutdown(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class Internet:
    """The outside port (``francine.ports.protocols.Outside``): external files by
    ``gs://`` (with the api's storage client) or ``https://``, and webhooks."""

    def __init__(self, storage_client):
        self._storage = storage_client

    def open_url(self, url: str, limit: int, own_buckets: frozenset[str],
                 allowed_buckets: frozenset[str] | None) -> Iterator[bytes]:
        return open_url(url, self._storage, limit, own_buckets, allowed_buckets)

    def post(self, url: str, body: bytes, headers: dict[str, str], deadline_s: float,
             insecure: bool = False) -> int:
        """``insecure``: a plain-http URL to a host the local stack's tests allow (the
        caller's policy; never in the cloud)."""
        if not insecure:
            return post(url, body, headers, deadline_s)
        import requests

        try:
            return requests.post(url, data=body, headers=headers, timeout=deadline_s,
                                 allow_redirects=False).status_code
        except requests.RequestException as e:
            raise errors.TransientError(f"webhook to {url}: {e}") from e

    def resolve_public(self, host: str, port: int) -> str:
        return resolve_public(host, port)
