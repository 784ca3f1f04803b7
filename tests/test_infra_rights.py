"""What Google enforces and the emulators do not, checked on the Pulumi program under
mocks: each account holds exactly the roles its declared rights need
(``francine.domain.rights``; tests/test_rights.py holds the code to the same table), the
render service's scaling is the watchdog's alone, and the first ``pulumi up`` on a new
project does not trip on the Pub/Sub agent or on Firestore's index contention. Also the
results bucket's CORS, soft delete, and a private api for organisations that forbid
``allUsers``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))

from francine_infra import config, firestore, iam  # noqa: E402
from francine_infra.config import ConfigError, FrancineConfig  # noqa: E402
from francine_infra.mocks import DEFAULT_TEST_CONFIG, PROJECT_NUMBER, run_program  # noqa: E402

from francine.domain import rights  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore:gcp.storage.getTransferProjectServieAccount:DeprecationWarning"
)

PROJECT = DEFAULT_TEST_CONFIG["gcp:project"]
BUCKET = "gcp:storage/bucket:Bucket"
SCALER_ROLE = f"projects/{PROJECT}/roles/francine_render_scaler"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

#: A model of Google's roles, from their documented permissions: the rights each one
#: carries out, on the kind of scope it is granted on. Ordered narrow to wide within a
#: kind, so that a binding is minimal when no earlier role of its kind would do.
ROLE_MODEL: dict[str, tuple[str, frozenset[str]]] = {
    "roles/pubsub.publisher": ("topic", frozenset({"publish"})),
    "roles/pubsub.viewer": ("topic", frozenset({"inspect"})),
    "roles/storage.objectViewer": ("bucket", frozenset({"read", "list"})),
    "roles/storage.objectUser": ("bucket", frozenset({"read", "list", "write", "delete"})),
    "roles/datastore.viewer": ("firestore", frozenset({"read"})),
    "roles/datastore.user": ("firestore", frozenset({"read", "write"})),
    "roles/iam.serviceAccountTokenCreator": ("self", frozenset({"sign"})),
}


@pytest.fixture(scope="module")
def stack():
    return run_program()


def sa(key: str) -> str:
    return f"francine-{key}@{PROJECT}.iam.gserviceaccount.com"


def account_path(key: str) -> str:
    return f"service account projects/{PROJECT}/serviceAccounts/{sa(key)}"


def target_of(service: str, role: str, scope: str) -> str:
    """The rights table's target of a binding's scope."""
    kind, _, name = scope.partition(" ")
    if kind == "topic":
        return "topic:" + name.removeprefix("francine-")
    if kind == "bucket":
        return "bucket:" + name.removeprefix(f"{PROJECT}-francine-")
    if kind == "project":
        return "firestore"
    if scope == account_path(service):
        return "self"
    if scope in (account_path("renderer"), "run service francine-renderer"):
        return "render-service"
    raise AssertionError(f"{service}: {role} on {scope} is no right of the table")


def permits(role: str, target: str) -> frozenset[tuple[str, str]]:
    """(action, target) pairs that ``role`` on ``target`` carries out alone."""
    if target == "render-service":
        return frozenset()  # scaling takes two roles together: below
    kind, actions = ROLE_MODEL[role]
    assert target.partition(":")[0] == kind, (role, target)
    return frozenset((action, target) for action in actions)


def runtime_bindings(recording) -> dict[str, set[tuple[str, str]]]:
    """Service → its (role, scope) bindings."""
    roles = recording.roles_by_member()
    return {service: set(roles.get(f"serviceAccount:{sa(service)}", []))
            for service in rights.SERVICES}


def test_the_program_grants_exactly_the_declared_rights(stack):
    rights.check()
    for service, bindings in runtime_bindings(stack).items():
        declared = {(r.action, r.target) for r in rights.of(service)
                    if r.target not in rights.UNGRANTED}
        permitted: set[tuple[str, str]] = set()
        for role, scope in bindings:
            target = target_of(service, role, scope)
            carried = permits(role, target)
            permitted |= carried
            if target == "render-service":
                continue
            needed = {a for a, t in declared if t == target}
            # Needed at all, and no narrower role of its kind would do.
            assert needed & {a for a, _ in carried}, (service, role, scope)
            kind = ROLE_MODEL[role][0]
            for narrower, (other, actions) in ROLE_MODEL.items():
                if narrower == role:
                    break
                assert other != kind or not needed <= actions, (
                    f"{service}: {narrower} would do for {needed} on {target}, not {role}")
        scaling = {("roles/iam.serviceAccountUser", account_path("renderer")),
                   (SCALER_ROLE, "run service francine-renderer")}
        if scaling <= bindings:
            permitted.add(("scale", "render-service"))
        assert not bindings & scaling or scaling <= bindings, (service, "half a scaler")
        missing = declared - permitted
        assert not missing, f"{service} is declared {missing} and not granted them"


def test_the_table_and_the_program_agree_on_every_runtime_grant(stack):
    """The derived grants, one by one, are the bindings the program makes."""
    bindings = runtime_bindings(stack)
    for service, grants in iam.runtime_grants().items():
        made = {(g.role, g.scope) for g in grants}
        granted = {(role, target_of(service, role, scope)) for role, scope in bindings[service]}
        expected = {(role, "render-service" if scope == "account:renderer" else
                     "self" if scope == f"account:{service}" else
                     "firestore" if scope == "project" else scope)
                    for role, scope in made}
        expected |= {(SCALER_ROLE, "render-service") for s in iam.scalers() if s == service}
        assert granted == expected, service


def test_a_right_the_table_drops_is_a_grant_the_program_drops():
    """The program reads the table: without the render service's publish to produce,
    its account has no publisher role there."""
    table = tuple(r for r in rights.RIGHTS
                  if r.triple != ("renderer", "publish", "topic:produce"))
    grants = {(g.role, g.scope) for g in iam.runtime_grants(table)["renderer"]}
    assert ("roles/pubsub.publisher", "topic:produce") not in grants
    assert ("roles/pubsub.publisher", "topic:events") in grants


def test_the_render_service_may_publish_where_its_code_publishes(stack):
    renderer = stack.roles_by_member()[f"serviceAccount:{sa('renderer')}"]
    published = {scope for role, scope in renderer if role == "roles/pubsub.publisher"}
    # A failed pass produced again, slots handed on, the status of an execution it fails.
    assert published == {"topic francine-produce", "topic francine-events",
                         "topic francine-execution-events"}


def test_only_the_watchdog_may_scale_the_render_service(stack):
    (role,) = stack.of_type("gcp:projects/iAMCustomRole:IAMCustomRole")
    assert role.inputs["permissions"] == ["run.services.get", "run.services.update"]
    assert role.inputs["roleId"] == "francine_render_scaler"
    on_service = [(member, r) for member, r, scope in stack.iam_bindings()
                  if scope == "run service francine-renderer"]
    assert sorted(on_service) == sorted([
        (f"serviceAccount:{sa('pusher')}", "roles/run.invoker"),
        (f"serviceAccount:{sa('watchdog')}", SCALER_ROLE)])
    act_as = [member for member, r, scope in stack.iam_bindings()
              if r == "roles/iam.serviceAccountUser"]
    assert act_as == [f"serviceAccount:{sa('watchdog')}"]
    assert not [b for b in stack.iam_bindings() if b[1] == "roles/run.developer"]
    api = stack.roles_by_member()[f"serviceAccount:{sa('api')}"]
    assert not [role for role, scope in api if "renderer" in scope]
    # The watchdog's environment names the service it scales.
    (watchdog,) = [f for f in stack.of_type("gcp:cloudfunctionsv2/function:Function")
                   if f.inputs["name"] == "francine-watchdog"]
    service = watchdog.inputs["serviceConfig"]["environmentVariables"]["FRANCINE_RENDER_SERVICE"]
    assert service.endswith("/services/francine-renderer")


def dependencies(recording, resource) -> set[str]:
    return {urn.rsplit("::", 1)[1] for urn in recording.depends_on(resource)}


def test_the_pubsub_agent_exists_before_anything_is_granted_to_it(stack):
    (agent,) = stack.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    assert agent.inputs["service"] == "pubsub.googleapis.com"
    assert "apis-pubsub" in dependencies(stack, agent)
    granted = [r for r in stack.custom_resources
               if r.type.endswith(("IAMMember", "IamMember"))
               and r.inputs["member"] == PUBSUB_AGENT]
    # The token creator, a subscriber per push subscription, a publisher per
    # dead-letter topic.
    assert len(granted) >= 5
    for grant in granted:
        assert agent.name in dependencies(stack, grant), grant.name


def test_indexes_and_field_overrides_are_made_one_at_a_time(stack):
    chain = (stack.of_type("gcp:firestore/index:Index")
             + stack.of_type("gcp:firestore/field:Field"))
    assert len(chain) == (len(firestore.COMPOSITE_INDEXES)
                          + len(firestore.COLLECTION_GROUP_INDEXES)
                          + len(firestore.COLLECTION_GROUP_FIELDS)) == 12
    names = {r.name for r in chain}
    # Each waits for the database and exactly one of the others, but the first: one
    # path through all of them.
    before = {}
    for resource in chain:
        assert "firestore" in dependencies(stack, resource), resource.name
        waits_for = dependencies(stack, resource) & names or {"firestore"}
        assert len(waits_for) == 1, (resource.name, waits_for)
        before[resource.name] = waits_for.pop()
    order, at = [], "firestore"
    after = {prev: name for name, prev in before.items()}
    assert len(after) == len(before)  # nothing waits for the same one as another
    while at in after:
        at = after[at]
        order.append(at)
    assert sorted(order) == sorted(names)


def test_no_two_resources_share_a_name(stack):
    """Pulumi refuses a second resource of one type and name (a duplicate URN): the two
    indexes over (status, speculated, started), one per direction, once did."""
    seen = [(r.type, r.name) for r in stack.resources]
    assert len(seen) == len(set(seen)), sorted(k for k in seen if seen.count(k) > 1)
    names = [n for _, _, _, n in firestore.index_names("firestore")]
    assert "firestore-tasks-status-speculated-started" in names
    assert "firestore-tasks-status-speculated-started-desc" in names
    assert "firestore-tasks-kind-finished" in names  # unchanged: no other to tell from


def buckets(recording) -> dict[str, dict]:
    return {b.inputs["name"].rsplit("-", 1)[1]: b.inputs for b in recording.of_type(BUCKET)}


def test_the_viewer_may_read_signed_result_urls(stack):
    by_key = buckets(stack)
    (cors,) = by_key["results"]["cors"]
    assert cors["methods"] == ["GET", "HEAD"]
    assert cors["origins"] == ["*"]
    assert "Content-Type" in cors["responseHeaders"]
    for key in ("resources", "partials", "sources"):
        assert not by_key[key].get("cors"), key
    mine = run_program(DEFAULT_TEST_CONFIG | {
        "francine:resultsCorsOrigins": "https://render.example.com, http://localhost:8080"})
    (cors,) = buckets(mine)["results"]["cors"]
    assert cors["origins"] == ["https://render.example.com", "http://localhost:8080"]
    assert not buckets(run_program(DEFAULT_TEST_CONFIG | {
        "francine:resultsCorsOrigins": ""}))["results"].get("cors")


def soft_delete_days(recording) -> dict[str, float]:
    return {key: inputs["softDeletePolicy"]["retentionDurationSeconds"] / 86400
            for key, inputs in buckets(recording).items()}


def test_a_destroyed_stack_leaves_no_deleted_data_billed(stack):
    assert soft_delete_days(stack) == {
        "resources": 0, "partials": 0, "results": 0, "sources": 0}
    kept = run_program(DEFAULT_TEST_CONFIG | {"francine:softDeleteDays": "14"})
    assert soft_delete_days(kept) == {
        "resources": 14, "partials": 0, "results": 14, "sources": 0}


def invokers_of_api(recording) -> list[str]:
    return sorted(member for member, role, scope in recording.iam_bindings()
                  if scope == "run service francine-api" and role == "roles/run.invoker")


def test_the_api_can_be_private_where_allusers_is_refused(stack):
    assert invokers_of_api(stack) == ["allUsers"]
    private = run_program(DEFAULT_TEST_CONFIG | {
        "francine:publicApi": "false",
        "francine:apiInvokers": "serviceAccount:gateway@gw.iam.gserviceaccount.com,"
                                "group:renderers@example.com"})
    assert invokers_of_api(private) == ["group:renderers@example.com",
                                        "serviceAccount:gateway@gw.iam.gserviceaccount.com"]
    assert not [b for b in private.iam_bindings() if b[0].startswith("all")]
    readme = (ROOT / "infra" / "README.md").read_text()
    for needle in ("Domain restricted sharing", "iam.allowedPolicyMemberDomains",
                   "francine:publicApi", "X-Serverless-Authorization"):
        assert needle in readme, needle


@pytest.mark.parametrize("changes, message", [
    ({"soft_delete_days": 3}, "softDeleteDays"),
    ({"soft_delete_days": 91}, "softDeleteDays"),
    ({"results_cors_origins": ("https://example.com/viewer",)}, "resultsCorsOrigins"),
    ({"api_invokers": ("allUsers",)}, "publicApi"),
    ({"api_invokers": ("alice@example.com",)}, "apiInvokers"),
])
def test_configuration_of_the_new_keys_is_validated(changes, message):
    with pytest.raises(ConfigError, match=message):
        FrancineConfig(project="p", **changes)
    assert FrancineConfig(project="p").soft_delete_days == 0
    assert config.FrancineConfig(project="p", soft_delete_days=7).soft_delete_days == 7
