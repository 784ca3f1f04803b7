"""Fixtures that run the real local stack: the Firestore, Pub/Sub and Cloud Storage
emulators, the api, two render workers and the reducer, as separate processes.

One stack serves the whole test session (it takes seconds to start); every test makes
its own users and sessions, so tests do not see each other's data.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest

from francine.tools.client import Client
from francine.tools.local.processes import environment

UPLOAD_LIMIT = 8 << 20  # request bodies (Cloud Run caps them at 32 MiB in the cloud)
RESOURCE_LIMIT_BYTES = 12 << 20  # any resource, attached by URL too
RESOURCE_LIMIT = 8  # the Cornell box test attaches 7
RESPONSE_LIMIT = 512 << 10  # larger results are redirected to a URL of their own


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from francine.tools.local.stack import Stack, StackOptions

    # Short retry back-off so that failure paths reach the dead-letter topic in seconds.
    # Small upload and resource limits (defaults: 512 MiB, 1000) so that the paths that
    # refuse more can be tested.
    options = StackOptions(workers=2, state_dir=tmp_path_factory.mktemp("stack"),
                           min_backoff_s=1, max_backoff_s=2, max_delivery_attempts=5,
                           extra_env={"FRANCINE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
                                      "FRANCINE_MAX_RESOURCE_BYTES": str(RESOURCE_LIMIT_BYTES),
                                      "FRANCINE_MAX_RESOURCES": str(RESOURCE_LIMIT),
                                      "FRANCINE_MAX_RESPONSE_BYTES": str(RESPONSE_LIMIT),
                                      # webhook tests receive on this machine
                                      "FRANCINE_NOTIFY_INSECURE_HOSTS": "127.0.0.1",
                                      # one pass per task: tests count tasks
                                      "FRANCINE_MIN_TASK_S": "0"})
    with Stack(options) as s:
        yield s


@pytest.fixture(scope="session")
def adapters(stack):
    """Adapters of this test process, pointed at the stack's emulators (to look behind
    the API: documents, objects, messages)."""
    from francine.base.config import Settings
    from francine.tools.wiring import make_adapters

    with environment(stack.info["env"]):
        yield make_adapters(Settings.from_env())


@pytest.fixture
def client(stack):
    """A client with a fresh user of its own; its sessions are deleted afterwards
    (through the API, which also cancels what still runs and removes the images)."""
    from francine.tools.local.stack import create_user_in

    key = create_user_in(stack.info["env"], stack.info["project"], f"test-{uuid.uuid4().hex[:8]}")
    client = Client(stack.info["api_url"], key)
    yield client
    for session in client.request("GET", "/v1/sessions").json()["sessions"]:
        client.request("DELETE", f"/v1/sessions/{session['id']}")


@pytest.fixture
def small_ao():
    """A small aobench scene: the real scene, fewer pixels and rays, so tests are quick."""
    return {"width": 96, "height": 64, "nao_samples": 4}


REPO = pathlib.Path(__file__).resolve().parents[1]
