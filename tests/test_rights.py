"""Least privilege, shown on the whole pipeline: every platform call that a process of
the local stack makes is one that its service's account is granted in the cloud.

The emulators enforce no IAM, so a publish to a topic that the account may not publish
to passes every other test and is a 403 in production. Here a stack runs with the audit
on (``francine.tools.local.audit``: every store, bus, blobs, Cloud Run and outside-world
call of the api, the render workers, the reducer and the watchdog is recorded with its
process's service), through the paths that reach the rarer calls: a render with a
resource, a webhook and a result served by URL; a failed pass replaced; an execution
that fails in the render service while other work waits in the farm; a cancel and a
preview; an upload, attaches by gs:// and https:// URL; a session deleted; watchdog
sweeps, one of which resumes an execution whose creating request died. Then every
recorded (service, action, target) must be a right of ``francine.domain.rights.RIGHTS``
(which the Pulumi program grants, no more: tests/test_infra_rights.py), and every right
must have been used, or be named below with the reason this run cannot reach it.

Failures come from a producer of this module (``Flaky``, the ao producer that fails
renders on purpose), which the stack's processes register through the wiring's hook
(``install`` below). The warm-up's Cloud Run calls are made for real: the stack names a
render service (none exists, and there are no credentials for one) so that the audit
records who calls it; each call then fails and is logged, as the warm-up allows.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import pathlib
import threading
import time
import uuid

import pytest
import requests

from francine import producers
from francine.domain import rights
from francine.tools.local import audit

TESTS = pathlib.Path(__file__).resolve().parent
#: Where the stack's processes keep what Flaky shares between them.
SCRATCH_ENV = "FRANCINE_RIGHTS_SCRATCH"

#: Rights that this run does not reach, and why they are declared anyway.
UNEXERCISED = {
    ("api", "list", "bucket:resources"):
        "garbage collection runs every gc_interval_s (600 s) in the local api",
    ("watchdog", "publish", "topic:produce"):
        "speculative copies and re-driven tasks need a straggler or a stall "
        "(tests/test_failure_budget.py drives them by hand)",
    ("watchdog", "publish", "topic:events"):
        "a re-driven reduction needs a lost task event (tests/test_failure_budget.py)",
    ("watchdog", "publish", "topic:execution-events"):
        "the watchdog ends only executions that stalled for FRANCINE_STALL_S",
    ("reducer", "publish", "topic:events"):
        "a reduction whose input was lost is produced again from its last child "
        "(tests/test_failure_budget.py); reductions otherwise advance in one request",
    ("renderer", "read", "bucket:partials"):
        "the pieces of a speculative copy, assembled by the render service "
        "(tests/test_copy_pieces.py)",
}

SCENE = {"width": 16, "height": 16, "nao_samples": 1}
#: Widths that tell Flaky what to do.
FAIL_ONCE, FAIL_ALWAYS = 24, 40


class Flaky:
    """The ao producer, whose renders of a scene ``FAIL_ONCE`` wide fail once in the
    whole stack (a failed pass, replaced) and of one ``FAIL_ALWAYS`` wide always (the
    execution fails in the render service). Each render reads every resource of its
    execution, as a scene with meshes would."""

    name = "rights-flaky"

    def __init__(self):
        self.ao = producers.get("ao")
        self.display, self.channels = self.ao.display, self.ao.channels

    def __getattr__(self, name):  # schema, validation, sizes, estimates: ao's
        return getattr(self.ao, name)

    def render(self, scene, tile, seed, resources):
        for name in resources.infos:
            resources.path(name)
        if scene["width"] == FAIL_ALWAYS:
            raise RuntimeError("the scene's lamp exploded")
        if scene["width"] == FAIL_ONCE:
            marker = pathlib.Path(os.environ[SCRATCH_ENV]) / "failed-once"
            with contextlib.suppress(FileExistsError):
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                raise RuntimeError("a cosmic ray")
        return self.ao.render(scene, tile, seed, resources)


def install(adapters):
    """The hook of the stack's processes (``FRANCINE_ADAPTER_HOOK``): Flaky, then the
    audit."""
    if Flaky.name not in producers.names():
        producers.register(Flaky())
    return audit.install(adapters)


@contextlib.contextmanager
def webhook_receiver():
    """An HTTP endpoint on 127.0.0.1 that records the bodies it receives."""
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


def external_bucket(stack, client) -> str:
    """A bucket of the user's own with one object, on the user's allow-list; its URL."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from francine.adapters.cloud import firestore_store
    from francine.services import users
    from francine.tools.local.processes import environment

    with environment(stack.info["env"]):
        gcs = storage.Client(project=stack.info["project"], credentials=AnonymousCredentials())
        bucket = gcs.create_bucket(f"user-data-{uuid.uuid4().hex[:12]}")
        bucket.blob("lamp.txt").upload_from_string(b"a lamp\n" * 100)
        store = firestore_store(stack.info["project"])
        key = client.session.headers["Authorization"].split()[1]
        users.set_buckets(store, store.get_user(users.key_hash(key))["id"], [bucket.name])
    return f"gs://{bucket.name}/lamp.txt"


def upload(client, sid: str, name: str, data: bytes) -> dict:
    """A file sent straight to storage: an upload session, the bytes, the finish."""
    declared = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    started = client.request("POST", f"/v1/sessions/{sid}/uploads", json=declared).json()
    requests.put(started["upload_url"], data=data, timeout=30).raise_for_status()
    return client.request("POST", started["finish"], json=declared).json()


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def resumed_by_the_watchdog(stack, client) -> None:
    """An execution whose creating request died before it wrote its tasks (here, this
    process's store refuses them), old enough to be resumed: the watchdog's sweep
    writes its tasks, admits them to the farm and publishes them. Its end is read from
    the store, not through the api, whose status read would resume it too."""
    import datetime as dt

    from francine.base import errors
    from francine.base.config import Settings
    from francine.services import executions
    from francine.tools.local.processes import environment
    from francine.tools.wiring import make_adapters

    if Flaky.name not in producers.names():
        producers.register(Flaky())
    sid = client.create_session(Flaky.name, SCENE)["id"]
    with environment(stack.info["env"]):
        ad = make_adapters(Settings.from_env())
    user = ad.store.get_session(sid).user

    def died(*args, **kwargs):
        raise errors.TransientError("the request died before writing its tasks")

    write_tasks, ad.store.write_tasks = ad.store.write_tasks, died
    try:
        with pytest.raises(errors.TransientError):
            executions.start(ad, user, sid, {"parallel": 2}, idempotency_key="died")
    finally:
        ad.store.write_tasks = write_tasks
    eid = executions.execution_id(user, sid, "died")
    ex = ad.store.execution(sid, eid)
    assert not ex.planned and not ex.published
    ad.store.update_execution(sid, eid, {
        "created": ex.created - dt.timedelta(seconds=executions.STALLED_S + 1)})
    wait_for(lambda: ad.store.execution(sid, eid).status == "done", 60,
             "the watchdog to resume the execution")


def exercise(stack, client, hook_url: str, hooks: list[bytes]) -> None:
    """The paths, each checked for the outcome it must have."""
    render = client.create_session(Flaky.name, SCENE)["id"]
    assert upload(client, render, "lamp.bin", b"\x00\x01" * 600)["name"] == "lamp.bin"
    attach = client.request("POST", f"/v1/sessions/{render}/resources",
                            json={"name": "lamp.txt", "url": external_bucket(stack, client)})
    assert attach.status_code == 201, attach.text
    refused = client.session.post(client.api_url + f"/v1/sessions/{render}/resources",
                                  json={"name": "far.txt", "url": "https://127.0.0.1/far.txt"})
    assert refused.status_code == 400  # not a public address
    done = client.request("POST", f"/v1/sessions/{render}/executions",
                          json={"parallel": 2, "notify_url": hook_url}).json()["id"]

    # A failed pass replaced; an execution failed by the render service while a long
    # one waits in the farm (its slots are handed on), which is then cancelled.
    replaced = client.create_session(Flaky.name, {**SCENE, "width": FAIL_ONCE})["id"]
    replaced_eid = client.execute(replaced, parallel=20)["id"]  # a budget of 2
    failing = client.create_session(Flaky.name, {**SCENE, "width": FAIL_ALWAYS})["id"]
    failing_eid = client.execute(failing, parallel=2)["id"]
    cancelled = client.create_session(Flaky.name, SCENE)["id"]
    cancelled_eid = client.execute(cancelled, parallel=60)["id"]

    assert client.wait(render, done, timeout_s=60)["status"] == "done"
    served = client.session.get(
        client.api_url + f"/v1/sessions/{render}/executions/{done}/result",
        allow_redirects=False, timeout=30)
    assert served.status_code == 307, served.text  # larger than a response here
    status = client.wait(replaced, replaced_eid, timeout_s=60)
    assert status["status"] == "done" and status["tasks"]["replaced"] == 1, status
    status = client.wait(failing, failing_eid, timeout_s=60)
    assert status["status"] == "failed", status

    wait_for(lambda: client.execution(cancelled, cancelled_eid)["tasks"]["done"] >= 1,
             60, "a task of the long execution")
    assert client.cancel(cancelled, cancelled_eid)["status"] in ("cancelled", "cancelling")
    preview = client.session.get(
        client.api_url + f"/v1/sessions/{cancelled}/executions/{cancelled_eid}/preview",
        timeout=30)
    assert preview.status_code == 200, preview.text  # from the partials stored

    wait_for(lambda: hooks, 30, "the webhook")
    resumed_by_the_watchdog(stack, client)
    client.delete_session(render)
    report = stack.sweep()  # and the timer's sweeps, every second
    assert "min_instances" in report


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> set[tuple[str, str, str, str]]:
    """(service, action, target, method) of every call the stack's processes made."""
    from francine.tools.client import Client
    from francine.tools.local.stack import Stack, StackOptions, create_user_in

    state = tmp_path_factory.mktemp("rights")
    log = state / "audit.jsonl"
    options = StackOptions(
        workers=2, state_dir=state, min_backoff_s=1, max_backoff_s=2,
        max_delivery_attempts=5, farm_slots=2, watchdog_interval_s=1.0, audit=log,
        extra_env={
            "FRANCINE_ADAPTER_HOOK": "test_rights:install",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS),
                                                        os.environ.get("PYTHONPATH")])),
            SCRATCH_ENV: str(state),
            "FRANCINE_MIN_TASK_S": "0",  # one pass per task
            "FRANCINE_MAX_RESPONSE_BYTES": "16",  # results are served by URL
            "FRANCINE_NOTIFY_INSECURE_HOSTS": "127.0.0.1",
            # The warm-up acts for every execution, against a render service that the
            # processes have no credentials for: the calls are made, and fail.
            "FRANCINE_RENDER_SERVICE":
                "projects/francine-local/locations/local/services/francine-renderer",
            "FRANCINE_WARM_THRESHOLD": "1",
            "GOOGLE_APPLICATION_CREDENTIALS": str(state / "no-credentials.json"),
        })
    with Stack(options) as stack, webhook_receiver() as (hook_url, hooks):
        key = create_user_in(stack.info["env"], stack.info["project"], "auditor")
        exercise(stack, Client(stack.info["api_url"], key), hook_url, hooks)
        time.sleep(1.5)  # a last sweep of the timer
    return audit.load(log)


def triples(records) -> set[tuple[str, str, str]]:
    return {(service, action, target) for service, action, target, _ in records}


def test_every_service_was_audited(recorded):
    assert {service for service, *_ in recorded} == set(rights.SERVICES)


def test_every_call_is_within_the_declared_rights(recorded):
    allowed = rights.allowed()
    denied = sorted(r for r in recorded if r[:3] not in allowed)
    assert not denied, (
        "calls that the service's account is not granted in the cloud (add the right to "
        "francine.domain.rights.RIGHTS, or move the call):\n"
        + "\n".join(f"  {s} {a} {t}  ({m})" for s, a, t, m in denied))


def test_only_the_watchdog_scales_the_render_service(recorded):
    scalers = {s for s, a, t in triples(recorded) if (a, t) == ("scale", "render-service")}
    assert scalers == {"watchdog"}


def test_every_declared_right_is_needed(recorded):
    used = triples(recorded)
    unused = sorted(r.triple for r in rights.RIGHTS
                    if r.triple not in used and r.triple not in UNEXERCISED)
    assert not unused, f"declared, granted in the cloud, and never used: {unused}"
    assert set(UNEXERCISED) <= rights.allowed()


# --- without a stack: the table and the recorder -----------------------------------------


def test_the_table_names_known_services_targets_and_actions():
    rights.check()
    assert {r.service for r in rights.RIGHTS} == set(rights.SERVICES)
    # What the findings were about: the render service publishes where its code does.
    renderer = {r.target for r in rights.of("renderer") if r.action == "publish"}
    assert renderer == {"topic:produce", "topic:events", "topic:execution-events"}
    assert [r.service for r in rights.RIGHTS if r.action == "scale"] == ["watchdog"]


def test_the_recorder_knows_every_method_of_the_ports():
    from francine.ports import protocols

    def methods(proto) -> set[str]:
        return {n for n in dir(proto) if not n.startswith("_")}

    assert methods(protocols.Bus) <= set(audit.BUS)
    assert methods(protocols.Blobs) <= set(audit.BLOBS)
    assert methods(protocols.Services) <= set(audit.SERVICES)
    assert methods(protocols.Outside) <= set(audit.OUTSIDE)
    # Names of reads that the store no longer has would hide a write under a read.
    assert not audit.STORE_READS - methods(protocols.Store) - {"count_resources"}


def test_a_call_outside_the_rights_is_recorded_and_refused(tmp_path, monkeypatch):
    """The check can fail: a render service that sends webhooks and deletes results."""
    from francine.twins import twin_adapters

    log = tmp_path / "audit.jsonl"
    monkeypatch.setenv(audit.SERVICE_ENV, "renderer")
    ad = audit.install(twin_adapters(), str(log))
    ad.blobs.put_result("results/s/e.png", b"png", "image/png")
    ad.blobs.delete_object("results", "results/s/e.png")
    with contextlib.suppress(Exception):
        ad.outside.post("https://example.com/hook", b"{}", {}, 1.0)
    found = audit.load(log)
    assert ("renderer", "delete", "bucket:results", "blobs.delete_object") in found
    assert ("renderer", "post", "internet", "outside.post") in found
    assert not triples(found) <= rights.allowed()
    assert triples(found) - rights.allowed() == {
        ("renderer", "write", "bucket:results"), ("renderer", "delete", "bucket:results"),
        ("renderer", "post", "internet")}
