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
