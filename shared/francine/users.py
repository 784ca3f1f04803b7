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

KEY_PREFIX = "fr_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_user(store, name: str, buckets: list[str] | None = None) -> tuple[str, str]:
    """Create a user; returns (user id, api key). The key is not stored anywhere."""
    key = new_key()
    user_id = uuid.uuid4().hex
    store.create_user(key_hash(key), {"id": user_id, "name": name,
                                      "buckets": sorted(set(buckets or []))})
    return user_id, key


def allowed_buckets(store, key: str) -> frozenset[str]:
    user = store.get_user(key_hash(key)) or {}
    return frozenset(user.get("buckets") or ())


# --- administration (``francine users ...``, straight to Firestore) -----------------------

def _users(store):
    return store._db.collection("users")  # the store's Firestore client


def _docs_of(store, user: str) -> list:
    """The key documents of a user, found by user id or by name."""
    from google.cloud.firestore_v1.base_query import FieldFilter

    by_id = list(_users(store).where(filter=FieldFilter("id", "==", user)).stream())
    return by_id or list(_users(store).where(filter=FieldFilter("name", "==", user)).stream())


def list_users(store) -> list[dict]:
    out = [{"id": d.get("id"), "name": d.get("name"), "buckets": d.get("buckets") or [],
            "created": d.get("created")} for d in (s.to_dict() for s in _users(store).stream())]
    return sorted(out, key=lambda u: (str(u["name"]), str(u["id"])))


def revoke(store, user: str) -> int:
    """Delete every key of ``user`` (id or name): the next request with one is a 401.
    The user's sessions stay (a new key for the same id reaches them again: rotate)."""
    docs = _docs_of(store, user)
    for snap in docs:
        snap.reference.delete()
    return len(docs)


def rotate(store, user: str) -> str:
    """A new key for ``user`` (id or name); the old keys stop working at once."""
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    if len({d.get("id") for d in docs}) > 1:
        raise ValueError(f"{user!r} names more than one user: give the user id")
    doc = docs[0].to_dict()
    doc.pop("created", None)
    key = new_key()
    store.create_user(key_hash(key), doc)
    for snap in docs:
        snap.reference.delete()
    return key


def set_buckets(store, user: str, add: list[str] = (), remove: list[str] = ()) -> list[str]:
    """Change the buckets ``user`` may attach gs:// objects from; returns the new list."""
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    buckets = sorted((set(docs[0].to_dict().get("buckets") or []) | set(add)) - set(remove))
    for snap in docs:
        snap.reference.update({"buckets": buckets})
    return buckets


def set_quota(store, user: str, name: str, value: float | None) -> dict:
    """Give ``user`` its own figure for quota ``name`` (quotas.NAMES); None: the
    deployment's default again. Returns the user's overrides."""
    from francine.quotas import NAMES

    if name not in NAMES:
        raise ValueError(f"quota: one of {list(NAMES)}")
    docs = _docs_of(store, user)
    if not docs:
        raise KeyError(user)
    own = dict(docs[0].to_dict().get("quotas") or {})
    if value is None:
        own.pop(name, None)
    else:
        own[name] = value
    for snap in docs:
        snap.reference.update({"quotas": own})
    return own
