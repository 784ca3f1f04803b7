"""API keys: generated here, shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import secrets
import uuid

KEY_PREFIX = "fr_"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_user(store, name: str) -> tuple[str, str]:
    """Create a user; returns (user id, api key). The key is not stored anywhere."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    user_id = uuid.uuid4().hex
    store.create_user(key_hash(key), {"id": user_id, "name": name})
    return user_id, key
