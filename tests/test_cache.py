"""The worker's resource cache: bounded in bytes, least recently used out."""

from __future__ import annotations

import os

from francine.services.cache import ResourceCache


def test_the_cache_keeps_within_its_bytes_and_drops_the_least_recently_used(tmp_path):
    cache = ResourceCache(tmp_path, limit=250)
    downloads = []

    def get(name, size):
        def download(dest):
            downloads.append(name)
            dest.write_bytes(name.encode()[:1] * size)
        return cache.path(name, download)

    a, b = get("a", 100), get("b", 100)
    os.utime(a, ns=(1, 1))  # a older than b
    os.utime(b, ns=(2, 2))
    assert get("a", 100) == a  # a hit: no download, and a is now the most recent
    assert downloads == ["a", "b"]
    get("c", 100)  # 300 > 250: b, the least recently used, goes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c"]
    assert cache.size() <= 250
    get("b", 100)  # fetched again
    assert downloads == ["a", "b", "c", "b"]
    big = get("huge", 1000)  # alone over the limit: kept (the task needs it), others out
    assert [p.name for p in tmp_path.iterdir()] == ["huge"] and big.read_bytes()[:1] == b"h"


def test_a_failed_download_leaves_nothing_behind(tmp_path):
    cache = ResourceCache(tmp_path, limit=1000)

    def broken(dest):
        dest.write_bytes(b"half")
        raise OSError("connection reset")

    try:
        cache.path("x", broken)
    except OSError:
        pass
    else:
        raise AssertionError("the download error must reach the caller")
    assert list(tmp_path.iterdir()) == []
