"""API keys: generated here, shown once, stored only as SHA-256 hashes.

A user document lives under the hash of its key (``users/<sha256>``): looking a key up
is one read, and revoking it is deleting that document, which takes effect at the next
request. Rotating a key moves the same user id (sessions stay theirs) to a new key and
deletes the old one. ``buckets`` is the list of gs:// buckets an administrator allowed
the user to attach from.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable

from francine.ports.protocols import Fields, UserStore

KEY_PREFIX = "fr_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_user(store: UserStore, name: str,
                buckets: list[str] | None = None) -> tuple[str, str]:
    """Create a user; returns (user id, api key). The key is not stored anywhere."""
    key = new_key()
    user_id = uuid.uuid4().hex
    store.create_user(key_hash(key), {"id": user_id, "name": name,
                                      "buckets": sorted(set(buckets or []))})
    return user_id, key


def allowed_buckets(store: UserStore, key: str) -> frozenset[str]:
    user = store.get_user(key_hash(key)) or {}
    return frozenset(user.get("buckets") or ())


# --- administration (``francine users ...``, straight to the store) -----------------------

def _docs_of(store: UserStore, user: str) -> list[tuple[str, Fields]]:
    """(key hash, document) of each key of a user, found by user id or by name."""
    return store.users_by("id", user) or store.users_by("name", user)


def list_users(store: UserStore) -> list[Fields]:
    out = [{"id": d.get("id"), "name": d.get("name"), "buckets": d.get("buckets") or [],
            "created": d.get("created")} for d in store.list_users()]
    return sorted(out, key=lambda u: (str(u["name"]), str(u["id"])))


def revoke(store: UserStore, user: str) -> int:
    """Delete every key of ``user`` (id or name): the next request with one is a 401.
    The user's sessions stay (a new key for the same id reaches them again: rotate)."""
    docs = _docs_of(store, user)
    for key, _ in docs:
        store.delete_user(key)
    return len(docs)


def rotate(store: UserStore, user: str) -> str:
    """A new key for ``user`` (id or name); the old keys stop working at once."""
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    if len({d.get("id") for _, d in docs}) > 1:
        raise ValueError(f"{user!r} names more than one user: give the user id")
    doc = dict(docs[0][1])
    doc.pop("created", None)
    key = new_key()
    store.create_user(key_hash(key), doc)
    for old, _ in docs:
        store.delete_user(old)
    return key


def set_buckets(store: UserStore, user: str, add: Iterable[str] = (),
                remove: Iterable[str] = ()) -> list[str]:
    """Change the buckets ``user`` may attach gs:// objects from; returns the new list."""
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    buckets = sorted((set(docs[0][1].get("buckets") or []) | set(add)) - set(remove))
    for key, _ in docs:
        store.update_user(key, {"buckets": buckets})
    return buckets


def set_quota(store: UserStore, user: str, name: str, value: float | None) -> Fields:
    """Give ``user`` its own figure for quota ``name`` (quotas.NAMES); None: the
    deployment's default again. Returns the user's overrides."""
    from francine.services.quotas import NAMES

    if name not in NAMES:
        raise ValueError(f"quota: one of {list(NAMES)}")
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    own = dict(docs[0][1].get("quotas") or {})
    if value is None:
        own.pop(name, None)
    else:
        own[name] = value
    for key, _ in docs:
        store.update_user(key, {"quotas": own})
    return own
