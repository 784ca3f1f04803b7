"""The UserStore port (keys, their users, webhook secrets, what the quotas read), on the
Firestore emulator and on the twin. The emulator's users are shared by every test of the
stack: each test names its own, and looks only at those."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pytest

from francine.base import errors
from francine.domain.records import Session, Status

from .test_store import record


def test_keys_are_found_by_hash_by_user_id_and_by_name(backend, unique):
    store = backend.store
    k1, k2 = f"{unique}-k1", f"{unique}-k2"
    store.create_user(k1, {"id": unique, "name": f"{unique}-n", "buckets": ["b"]})
    with pytest.raises(errors.Conflict):  # one document per key: created once
        store.create_user(k1, {"id": "someone else"})
    got = store.get_user(k1)
    assert (got["id"], got["name"], got["buckets"]) == (unique, f"{unique}-n", ["b"])
    assert got["created"] is not None
    assert store.get_user(f"{unique}-none") is None
    store.create_user(k2, {"id": unique, "name": f"{unique}-n", "buckets": []})  # rotated
    assert sorted(k for k, _ in store.users_by("id", unique)) == [k1, k2]
    assert sorted(k for k, _ in store.users_by("name", f"{unique}-n")) == [k1, k2]
    assert len(store.users_by("id", unique, limit=1)) == 1
    assert store.users_by("id", f"{unique}-none") == []
    assert sorted(d["name"] for d in store.list_users() if d.get("id") == unique) == [
        f"{unique}-n"] * 2


def test_a_key_is_updated_and_deleted(backend, unique):
    store = backend.store
    key = f"{unique}-k"
    store.create_user(key, {"id": unique, "name": "n", "buckets": ["a"]})
    store.update_user(key, {"buckets": ["b"], "quotas": {"stored_bytes": 5}})
    got = store.get_user(key)
    assert got["buckets"] == ["b"] and got["quotas"] == {"stored_bytes": 5}
    assert got["name"] == "n"  # the other fields stay
    with pytest.raises(errors.NotFound):
        store.update_user(f"{unique}-none", {"buckets": []})
    store.delete_user(key)
    assert store.get_user(key) is None and store.users_by("id", unique) == []
    store.delete_user(key)  # gone already: nothing to do


def test_a_webhook_secret_is_made_once(backend, unique):
    results, barrier = [], threading.Barrier(6)

    def ask():
        barrier.wait()
        results.append(backend.store.webhook_secret(unique))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (secret,) = set(results)  # first writer wins, every caller sees its secret
    assert secret.startswith("whsec_") and len(secret) > 30
    assert backend.store.webhook_secret(unique) == secret
    assert backend.store.webhook_secret(f"{unique}-other") != secret


def test_the_usage_the_quotas_read(backend, unique):
    """A user's executions in flight (shape and CPU estimate) and those that ended since
    a time (end, summary, estimate): only those fields, only that user's."""
    store = backend.store
    for sid, user in ((unique, unique), (f"{unique}-o", f"{unique}-other")):
        store.create_session(Session(sid, user, "ao", "png", {"width": 16}))
    for eid in ("e1", "e2", "e3"):
        store.create_execution(unique, eid, lambda s, eid=eid: ({}, record(unique, eid, s.user)))
    store.create_execution(f"{unique}-o", "e1",
                           lambda s: ({}, record(f"{unique}-o", "e1", s.user)))
    shape = record(unique, "e1", unique).shape
    assert store.executions_in_flight(unique) == [{"shape": shape, "cpu_estimate": 1.5}] * 3
    assert store.executions_finished_since(unique, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)) == []

    t = dt.datetime.now(dt.UTC).replace(microsecond=0)
    summary = {"time": {"cpu": 2.0}}
    store.finish_execution(unique, "e1", {"status": Status.DONE, "finished": t,
                                          "summary": summary})
    store.finish_execution(unique, "e2", {"status": Status.FAILED,
                                          "finished": t - dt.timedelta(days=2)})
    assert store.executions_in_flight(unique) == [{"shape": shape, "cpu_estimate": 1.5}]
    recent = store.executions_finished_since(unique, t - dt.timedelta(days=1))
    assert recent == [{"finished": t, "summary": summary, "cpu_estimate": 1.5}]
    assert len(store.executions_finished_since(unique, t - dt.timedelta(days=3))) == 2
    assert store.executions_in_flight(f"{unique}-none") == []


def test_an_estimate_left_unset_is_left_out(backend, unique):
    store = backend.store
    store.create_session(Session(unique, unique, "ao", "png", {"width": 16}))
    store.create_execution(unique, "e1", lambda s: ({}, dataclasses.replace(
        record(unique, "e1", s.user), cpu_estimate=None)))
    (usage,) = store.executions_in_flight(unique)
    assert usage == {"shape": record(unique, "e1", unique).shape}
