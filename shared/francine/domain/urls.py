"""Reading a URL that a user gives (an external resource, a webhook): one strict
parser whose reading is used for checking and fetching alike, and the test of an
address for being public. Pure: resolving and fetching are the adapter's
(``francine.adapters.external``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from francine.base import errors

FETCH_FAILED = "url: the file could not be fetched from that address"
MAX_URL = 2048
#: Bucket names as Cloud Storage accepts them (dotted names: 3..222, parts ≤ 63).
BUCKET = re.compile(r"^[a-z0-9](?:[a-z0-9_.-]{1,220})[a-z0-9]$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)"
                      r"(\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$")
#: Anything that two URL parsers could read differently is refused outright.
UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")


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


