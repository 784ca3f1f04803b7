"""Fixtures that run the real local stack: the Firestore, Pub/Sub and Cloud Storage
emulators, the api, two render workers and the reducer, as separate processes.

One stack serves the whole test session (it takes seconds to start); every test makes
its own users and sessions, so tests do not see each other's data.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid

import pytest

from francine.client import Client


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from francine.local.stack import Stack, StackOptions

    # Short retry back-off so that failure paths reach the dead-letter topic in seconds.
    options = StackOptions(workers=2, state_dir=tmp_path_factory.mktemp("stack"),
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=5)
    with Stack(options) as s:
        yield s


@contextlib.contextmanager
def environment(env: dict[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def adapters(stack):
    """Adapters of this test process, pointed at the stack's emulators (to look behind
    the API: documents, objects, messages)."""
    from francine.adapters.blobs import Blobs
    from francine.adapters.bus import Bus
    from francine.adapters.store import Store
    from francine.clients import Adapters, make_clients
    from francine.config import Settings

    with environment(stack.info["env"]):
        settings = Settings.from_env()
        clients = make_clients(settings)
        yield Adapters(settings, Store(clients.firestore), Bus(clients.publisher, settings),
                       Blobs(clients.storage, settings))


@pytest.fixture
def client(stack) -> Client:
    """A client with a fresh user of its own."""
    from francine.local.stack import create_user_in

    key = create_user_in(stack.info["env"], stack.info["project"], f"test-{uuid.uuid4().hex[:8]}")
    return Client(stack.info["api_url"], key)


@pytest.fixture
def small_ao():
    """A small aobench scene: the real scene, fewer pixels and rays, so tests are quick."""
    return {"width": 96, "height": 64, "nao_samples": 4}


REPO = pathlib.Path(__file__).resolve().parents[1]
