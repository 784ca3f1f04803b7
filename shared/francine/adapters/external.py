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
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from francine import errors
from francine.adapters import translated

CHUNK = 1 << 20
#: One fetch, from resolving the host to the last byte.
DEADLINE_S = 60.0
MAX_URL = 2048
#: Bucket names as Cloud Storage accepts them (dotted names: 3..222, parts ≤ 63).
BUCKET = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]{1,220})[a-z0-9]$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
                      r"(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$")
#: Anything that two URL parsers could read differently is refused outright.
UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
FETCH_FAILED = "url: the file could not be fetched from that address"


def bad_url(message: str) -> errors.BadRequest:
    return errors.BadRequest(f"url: {message}", "invalid_field")


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str  # https: IDNA-encoded lower-case name or IP literal (no brackets); gs: bucket
    port: int
    path: str  # https: path and query as sent; gs: the object name


def parse(url: object) -> Url:
    """The one reading of ``url`` used for checking and fetching alike."""
    if not isinstance(url, str) or not url:
        raise bad_url("a gs://bucket/object or https:// URL")
    if len(url) > MAX_URL:
        raise bad_url(f"at most {MAX_URL} characters")
    if UNSAFE.search(url):
        raise bad_url("no spaces, control characters or backslashes")
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("gs", "https"):
        raise bad_url("a gs://bucket/object or https:// URL")
    if scheme == "gs":
        bucket, _, name = rest.partition("/")
        return _parse_gs(bucket, name)
    parts = re.match(r"^([^/?#]*)(.*)$", rest, re.S)
    assert parts is not None  # the pattern matches every string
    authority, path = parts.groups()
    if "@" in authority:
        raise bad_url("credentials (user names and passwords) in URLs are not accepted")
    host, port = _split_host_port(authority)
    path = path.split("#", 1)[0]
    path = path if path.startswith("/") else "/" + path
    if not path.isascii():
        raise bad_url("the path must be ASCII (percent-encode other characters)")
    return Url("https", host, port, path)


def _parse_gs(bucket: str, name: str) -> Url:
    if not BUCKET.match(bucket) or ".." in bucket or any(
            len(part) > 63 for part in bucket.split(".")):
        raise bad_url("gs://bucket/object with a valid bucket name")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise bad_url("the object name must be valid UTF-8") from None
    if not name or size > 1024 or name in (".", "..") or "#" in name or "?" in name:
        raise bad_url("gs://bucket/object with an object name of 1 to 1024 bytes")
    return Url("gs", bucket, 0, name)


def _split_host_port(authority: str) -> tuple[str, int]:
    if authority.startswith("["):
        literal, close, after = authority[1:].partition("]")
        if not close:
            raise bad_url("an IPv6 address in brackets")
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise bad_url("not a valid IPv6 address") from None
        if after and not after.startswith(":"):
            raise bad_url("malformed host")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text = authority.partition(":")
        if not colon:
            port_text = None
        host = _hostname(host)
    port = 443
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
                and 1 <= int(port_text) <= 65535):
            raise bad_url("the port must be a number in 1..65535")
        port = int(port_text)
    return host, port


def _hostname(host: str) -> str:
    if not host:
        raise bad_url("a host name is required")
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except (UnicodeError, ValueError):
        raise bad_url("the host name is not a valid (internationalized) domain name") from None
    if not HOSTNAME.match(ascii_host):
        raise bad_url("the host name is not a valid domain name")
    return ascii_host


# --- address checks ---------------------------------------------------------------------

def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"):  # NAT64, IPv4-compatible
        if address in ipaddress.IPv6Network(net):
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_v4(address)
        if inner is not None:
            return is_public(inner)
    return True


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
