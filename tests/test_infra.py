"""The Pulumi program, property by property, under ``pulumi.runtime.set_mocks``.

No cloud and no Pulumi CLI: ``francine_infra.mocks.run_program`` runs the program with
mocks that record every resource's inputs, and the tests assert what ``pulumi up``
would create. Each run takes well under a second.
"""

from __future__ import annotations

import runpy
import sys
import tomllib
from pathlib import Path

import pulumi
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "infra"))

from francine_infra import apis, config, firestore, iam  # noqa: E402
from francine_infra.archives import (  # noqa: E402
    FUNCTION_EXTRAS,
    function_source,
    requirements_txt,
)
from francine_infra.config import ConfigError, FrancineConfig  # noqa: E402
from francine_infra.mocks import (  # noqa: E402
    DEFAULT_TEST_CONFIG,
    PROJECT_NUMBER,
    RecordingMocks,
    run_program,
)

from francine.domain import topology  # noqa: E402

# pulumi_gcp's own deprecated alias, imported with its module: not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore:gcp.storage.getTransferProjectServieAccount:DeprecationWarning"
)

PROJECT = DEFAULT_TEST_CONFIG["gcp:project"]
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
BUCKET = "gcp:storage/bucket:Bucket"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
FUNCTION = "gcp:cloudfunctionsv2/function:Function"
PUBSUB_AGENT = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

# The environment contract of shared/francine (every component reads all of it).
RUNTIME_ENV = {
    "GOOGLE_CLOUD_PROJECT",
    "FRANCINE_RESOURCES_BUCKET",
    "FRANCINE_PARTIALS_BUCKET",
    "FRANCINE_RESULTS_BUCKET",
    "FRANCINE_PRODUCE_TOPIC",
    "FRANCINE_EVENTS_TOPIC",
    "FRANCINE_FIRESTORE_DATABASE",
    "FRANCINE_MAX_TASK_S",
    "FRANCINE_ADMISSION_LIMIT",
    "FRANCINE_REDUCER_MEMORY_BYTES",
    "FRANCINE_RENDER_CPU",
    "FRANCINE_RENDER_MEMORY_BYTES",
    "FRANCINE_REDUCER_CPU",
    "FRANCINE_RENDER_SERVICE",
    "FRANCINE_MAX_RENDER_INSTANCES",
    "FRANCINE_FARM_SLOTS",
}


def sa(key: str, prefix: str = "francine") -> str:
    return f"{prefix}-{key}@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def stack():
    """The default stack: defaults everywhere, an image set."""
    return run_program()


@pytest.fixture(scope="module")
def tuned():
    """A stack with every autoscaling knob moved away from its default."""
    return run_program(
        DEFAULT_TEST_CONFIG
        | {
            "francine:maxRenderInstances": "37",
            "francine:renderCpu": "4",
            "francine:renderMemory": "8Gi",
            "francine:executionEnvironment": "gen1",
            "francine:maxTaskSeconds": "300",
            "francine:taskOverheadSeconds": "90",
            "francine:admissionLimit": "12",
            "francine:maxDeliveryAttempts": "20",
            "francine:partialsRetentionDays": "5",
        }
    )


def push_subscriptions(recording):
    return [r for r in recording.of_type(SUBSCRIPTION) if r.inputs.get("pushConfig")]


def subscription(recording, name: str):
    (found,) = [r for r in recording.of_type(SUBSCRIPTION) if r.inputs["name"] == name]
    return found


def render_service(recording):
    (service,) = recording.of_type(RUN_SERVICE)
    return service


def function(recording, key: str):
    (found,) = [r for r in recording.of_type(FUNCTION) if r.inputs["name"] == f"francine-{key}"]
    return found


def env_of_render(recording) -> dict[str, str]:
    (container,) = render_service(recording).inputs["template"]["containers"]
    return {e["name"]: e["value"] for e in container["envs"]}


# --- the render service --------------------------------------------------------------


def test_render_service_takes_one_task_per_instance_and_scales_from_zero(stack):
    template = render_service(stack).inputs["template"]
    assert template["maxInstanceRequestConcurrency"] == 1
    assert template["scaling"]["minInstanceCount"] == 0
    assert template["scaling"]["maxInstanceCount"] == 10
    assert template["serviceAccount"] == sa("renderer")
    (container,) = template["containers"]
    assert container["image"] == DEFAULT_TEST_CONFIG["francine:image"]
    assert container["ports"]["containerPort"] == 8080
    # Billed only while a request runs; a stuck render ends before the ack deadline.
    assert container["resources"]["cpuIdle"] is True
    assert template["timeout"] == f"{stack.outputs['requestTimeoutSeconds']}s"


def test_render_service_follows_the_configuration(tuned):
    template = render_service(tuned).inputs["template"]
    assert template["maxInstanceRequestConcurrency"] == 1
    assert template["scaling"]["maxInstanceCount"] == 37
    assert template["executionEnvironment"] == "EXECUTION_ENVIRONMENT_GEN1"
    (container,) = template["containers"]
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi"}
    assert template["timeout"] == "390s"  # maxTaskSeconds + taskOverheadSeconds
    assert env_of_render(tuned)["FRANCINE_ADMISSION_LIMIT"] == "12"
    assert env_of_render(tuned)["FRANCINE_MAX_TASK_S"] == "300"


def test_render_service_can_be_destroyed_and_is_not_public(stack):
    service = render_service(stack)
    assert service.inputs["deletionProtection"] is False
    invokers = [
        (member, scope)
        for member, role, scope in stack.iam_bindings()
        if role == "roles/run.invoker"
    ]
    assert ("allUsers", "run service francine-renderer") not in invokers
    assert (f"serviceAccount:{sa('pusher')}", "run service francine-renderer") in invokers


def test_without_an_image_there_is_no_render_service_yet():
    config = dict(DEFAULT_TEST_CONFIG)
    del config["francine:image"]
    recording = run_program(config)
    assert recording.of_type(RUN_SERVICE) == []
    names = {r.inputs["name"] for r in recording.of_type(SUBSCRIPTION)}
    assert "francine-produce-render" not in names
    assert "francine-events-reduce" in names
    assert recording.outputs["renderServiceUrl"] is None
    assert recording.outputs["suggestedRenderImage"].endswith("/francine/renderer")


# --- Pub/Sub ---------------------------------------------------------------------------


def test_every_push_subscription_has_oidc_retry_and_dead_letter(stack, tuned):
    for recording, attempts, task_seconds in ((stack, 10, 120), (tuned, 20, 300)):
        subscriptions = push_subscriptions(recording)
        assert len(subscriptions) == len(topology.ROUTES)
        for sub in subscriptions:
            inputs = sub.inputs
            oidc = inputs["pushConfig"]["oidcToken"]
            assert oidc["serviceAccountEmail"] == sa("pusher"), sub.name
            assert inputs["pushConfig"]["pushEndpoint"].startswith(oidc["audience"])
            assert inputs["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
            policy = inputs["deadLetterPolicy"]
            assert policy["deadLetterTopic"].startswith(f"projects/{PROJECT}/topics/")
            assert policy["maxDeliveryAttempts"] == attempts
            # A push must be answered within the ack deadline: longer than any task.
            assert task_seconds < inputs["ackDeadlineSeconds"] <= 600
            assert inputs["retryPolicy"]["minimumBackoff"] == "10s"
            assert inputs["expirationPolicy"] == {"ttl": ""}, "must never expire"


def endpoint_timeouts(recording) -> dict[str, int]:
    """Each push subscription's name → the request timeout of the service it pushes to."""
    render_timeout = int(render_service(recording).inputs["template"]["timeout"].rstrip("s"))
    reducer = function(recording, "reducer").inputs["serviceConfig"]["timeoutSeconds"]
    timeouts = {}
    for sub in push_subscriptions(recording):
        endpoint = sub.inputs["pushConfig"]["pushEndpoint"]
        timeouts[sub.inputs["name"]] = (
            render_timeout if "francine-renderer" in endpoint else reducer
        )
    return timeouts


@pytest.mark.parametrize("fixture, timeout", [("stack", 180), ("tuned", 390)])
def test_ack_deadlines_leave_a_margin_above_the_endpoint_timeouts(fixture, timeout, request):
    recording = request.getfixturevalue(fixture)
    timeouts = endpoint_timeouts(recording)
    assert len(timeouts) == len(topology.ROUTES) and set(timeouts.values()) == {timeout}
    for sub in push_subscriptions(recording):
        ack = sub.inputs["ackDeadlineSeconds"]
        # Cold start (~45 s for the last of many fresh instances) and queueing first:
        # never redelivered while the first attempt may still run.
        assert ack - timeouts[sub.inputs["name"]] >= 60, sub.inputs["name"]
        assert ack <= config.MAX_ACK_DEADLINE_SECONDS
    assert recording.outputs["ackDeadlineSeconds"] == timeout + 60
    assert recording.outputs["requestTimeoutSeconds"] == timeout


def test_a_deadline_beyond_pubsubs_limit_is_refused():
    with pytest.raises(ConfigError, match="ackMarginSeconds = 610 s"):
        FrancineConfig(project="p", max_task_s=480, task_overhead_seconds=60,
                       ack_margin_seconds=70)
    with pytest.raises(ConfigError, match="ackMarginSeconds"):
        FrancineConfig(project="p", ack_margin_seconds=5)


def test_routes_and_dead_letter_chain(stack):
    topics = f"projects/{PROJECT}/topics/"
    renderer = "https://francine-renderer-a1b2c3d4e5-ew.a.run.app"
    reducer = "https://francine-reducer-a1b2c3d4e5-ew.a.run.app"
    expected = {
        # subscription: (topic, endpoint, dead-letter topic)
        "francine-produce-render": (
            "francine-produce",
            f"{renderer}/",
            "francine-produce-dead-letter",
        ),
        "francine-events-reduce": (
            "francine-events",
            f"{reducer}/{topics}francine-events",
            "francine-events-dead-letter",
        ),
        "francine-produce-dead-letter-reduce": (
            "francine-produce-dead-letter",
            f"{reducer}/{topics}francine-produce-dead-letter",
            "francine-unprocessable",
        ),
        "francine-events-dead-letter-reduce": (
            "francine-events-dead-letter",
            f"{reducer}/{topics}francine-events-dead-letter",
            "francine-unprocessable",
        ),
    }
    for name, (topic, endpoint, dead_letter) in expected.items():
        inputs = subscription(stack, name).inputs
        assert inputs["topic"] == topics + topic
        assert inputs["pushConfig"]["pushEndpoint"] == endpoint
        assert inputs["deadLetterPolicy"]["deadLetterTopic"] == topics + dead_letter
    # What even the reducer cannot handle is kept for a person, not pushed anywhere.
    hold = subscription(stack, "francine-unprocessable-hold").inputs
    assert hold["topic"] == topics + "francine-unprocessable"
    assert "pushConfig" not in hold
    assert {t.inputs["name"] for t in stack.of_type(TOPIC)} == {
        "francine-produce",
        "francine-events",
        "francine-produce-dead-letter",
        "francine-events-dead-letter",
        "francine-unprocessable",
        "francine-execution-events",
    }


def test_pubsub_service_agent_may_dead_letter(stack):
    agent = set(stack.roles_by_member()[PUBSUB_AGENT])
    for sub in push_subscriptions(stack):
        name = sub.inputs["name"]
        dead_letter = sub.inputs["deadLetterPolicy"]["deadLetterTopic"].rsplit("/", 1)[1]
        assert ("roles/pubsub.subscriber", f"subscription {name}") in agent
        assert ("roles/pubsub.publisher", f"topic {dead_letter}") in agent
    # ... and mint the OIDC tokens of the pushes, as the push account only.
    pusher = f"projects/{PROJECT}/serviceAccounts/{sa('pusher')}"
    assert ("roles/iam.serviceAccountTokenCreator", f"service account {pusher}") in agent
    dead_letters = {r.dead_letter for r in topology.ROUTES}
    assert len(agent) == len(topology.ROUTES) + len(dead_letters) + 1
    # The agent is asked for (created) rather than assumed: tests/test_infra_rights.py.
    (identity,) = stack.of_type("gcp:projects/serviceIdentity:ServiceIdentity")
    assert identity.inputs["service"] == "pubsub.googleapis.com"


# --- storage ---------------------------------------------------------------------------


def lifecycle_days(recording) -> dict[str, int | None]:
    """Bucket key → the age in days at which its objects are deleted (None: never)."""
    days = {}
    for bucket in recording.of_type(BUCKET):
        key = bucket.inputs["name"].rsplit("-", 1)[1]
        rules = bucket.inputs.get("lifecycleRules") or []
        assert len(rules) <= 1, key
        for rule in rules:
            assert rule["action"]["type"] == "Delete", key
        days[key] = rules[0]["condition"]["age"] if rules else None
    return days


def test_every_bucket_deletes_after_its_configured_days(stack, tuned):
    assert lifecycle_days(stack) == {
        "partials": 3, "results": 30, "resources": 90, "sources": 30
    }
    assert lifecycle_days(tuned)["partials"] == 5
    custom = run_program(
        DEFAULT_TEST_CONFIG
        | {
            "francine:resultsRetentionDays": "7",
            "francine:resourcesRetentionDays": "0",  # kept forever
            "francine:sourcesRetentionDays": "2",
        }
    )
    assert lifecycle_days(custom) == {
        "partials": 3, "results": 7, "resources": None, "sources": 2
    }
    buckets = {b.inputs["name"]: b.inputs for b in stack.of_type(BUCKET)}
    partials = buckets[f"{PROJECT}-francine-partials"]
    assert partials["softDeletePolicy"]["retentionDurationSeconds"] == 0


def test_buckets_are_private_regional_and_destroyable(stack):
    buckets = stack.of_type(BUCKET)
    assert {b.inputs["name"] for b in buckets} == {
        f"{PROJECT}-francine-{key}" for key in ("resources", "partials", "results", "sources")
    }
    for bucket in buckets:
        assert bucket.inputs["uniformBucketLevelAccess"] is True
        assert bucket.inputs["publicAccessPrevention"] == "enforced"
        assert bucket.inputs["location"] == "europe-west1"
        assert bucket.inputs["forceDestroy"] is True


# --- identities and grants -------------------------------------------------------------


def test_no_account_holds_a_basic_role(stack):
    for member, role, scope in stack.iam_bindings():
        assert role not in {"roles/owner", "roles/editor", "roles/viewer"}, (member, scope)


def test_each_component_has_its_own_least_privilege_account(stack):
    roles = stack.roles_by_member()
    bucket = f"bucket {PROJECT}-francine-"
    project = f"project {PROJECT}"
    api_account = f"projects/{PROJECT}/serviceAccounts/{sa('api')}"
    renderer_account = f"service account projects/{PROJECT}/serviceAccounts/{sa('renderer')}"
    # Warm-up: the watchdog alone sets the render service's min instances, with a role
    # that holds only that (tests/test_infra_rights.py).
    warm = [("roles/iam.serviceAccountUser", renderer_account),
            (f"projects/{PROJECT}/roles/francine_render_scaler",
             "run service francine-renderer")]
    assert roles == {
        "allUsers": [("roles/run.invoker", "run service francine-api")],
        f"serviceAccount:{sa('api')}": sorted(
            [
                ("roles/datastore.user", project),
                ("roles/iam.serviceAccountTokenCreator", f"service account {api_account}"),
                ("roles/pubsub.publisher", "topic francine-execution-events"),
                ("roles/pubsub.publisher", "topic francine-produce"),
                ("roles/pubsub.viewer", "topic francine-produce"),
                ("roles/storage.objectUser", bucket + "partials"),
                ("roles/storage.objectUser", bucket + "resources"),
                ("roles/storage.objectUser", bucket + "results"),
            ]
        ),
        f"serviceAccount:{sa('renderer')}": sorted(
            [
                ("roles/datastore.user", project),
                # A failed pass produced again, slots handed on, a failed execution
                # announced: tests/test_rights.py.
                ("roles/pubsub.publisher", "topic francine-events"),
                ("roles/pubsub.publisher", "topic francine-execution-events"),
                ("roles/pubsub.publisher", "topic francine-produce"),
                ("roles/storage.objectUser", bucket + "partials"),
                ("roles/storage.objectViewer", bucket + "resources"),
            ]
        ),
        f"serviceAccount:{sa('reducer')}": sorted(
            [
                ("roles/datastore.user", project),
                ("roles/pubsub.publisher", "topic francine-events"),
                ("roles/pubsub.publisher", "topic francine-execution-events"),
                ("roles/pubsub.publisher", "topic francine-produce"),
                ("roles/storage.objectUser", bucket + "partials"),
                ("roles/storage.objectUser", bucket + "results"),
            ]
        ),
        f"serviceAccount:{sa('watchdog')}": sorted(
            [
                ("roles/datastore.user", project),
                ("roles/pubsub.publisher", "topic francine-events"),
                ("roles/pubsub.publisher", "topic francine-execution-events"),
                ("roles/pubsub.publisher", "topic francine-produce"),
                *warm,
            ]
        ),
        f"serviceAccount:{sa('pusher')}": [
            ("roles/run.invoker", "run service francine-reducer"),
            ("roles/run.invoker", "run service francine-renderer"),
        ],
        f"serviceAccount:{sa('scheduler')}": [
            ("roles/run.invoker", "run service francine-watchdog"),
        ],
        f"serviceAccount:{sa('builder')}": [
            ("roles/artifactregistry.writer", "repository francine"),
            ("roles/logging.logWriter", project),
            ("roles/storage.objectAdmin", project),
        ],
        PUBSUB_AGENT: roles[PUBSUB_AGENT],  # checked in test_pubsub_service_agent_may_dead_letter
    }


def test_components_run_as_their_accounts(stack):
    assert render_service(stack).inputs["template"]["serviceAccount"] == sa("renderer")
    for key in ("api", "reducer", "watchdog"):
        inputs = function(stack, key).inputs
        assert inputs["serviceConfig"]["serviceAccountEmail"] == sa(key)
        builder = f"projects/{PROJECT}/serviceAccounts/{sa('builder')}"
        assert inputs["buildConfig"]["serviceAccount"] == builder
    accounts = {a.inputs["accountId"] for a in stack.of_type("gcp:serviceaccount/account:Account")}
    assert accounts == {
        f"francine-{key}"
        for key in ("api", "renderer", "reducer", "watchdog", "pusher", "scheduler", "builder")
    }


def test_policy_table_refuses_basic_roles():
    assert not any(g.role in iam.FORBIDDEN_ROLES for grants in iam.POLICY.values() for g in grants)


# --- functions -------------------------------------------------------------------------


def test_api_is_a_public_http_function(stack):
    inputs = function(stack, "api").inputs
    assert inputs["buildConfig"]["entryPoint"] == "api"
    assert inputs["buildConfig"]["runtime"] == "python312"
    assert "eventTrigger" not in inputs
    assert inputs["serviceConfig"]["minInstanceCount"] == 0
    assert ("allUsers", "roles/run.invoker", "run service francine-api") in stack.iam_bindings()
    # ?block=1 answers before the platform cuts the request off.
    env = inputs["serviceConfig"]["environmentVariables"]
    assert float(env["FRANCINE_BLOCK_TIMEOUT_S"]) < inputs["serviceConfig"]["timeoutSeconds"]
    # uploads through the function stay under Cloud Run's 32 MiB request limit
    assert int(env["FRANCINE_MAX_UPLOAD_BYTES"]) < 32 << 20


def test_reducer_is_private_and_fed_by_our_own_subscriptions(stack):
    inputs = function(stack, "reducer").inputs
    assert inputs["buildConfig"]["entryPoint"] == "reducer"
    assert "eventTrigger" not in inputs  # retry and dead-letter policies stay ours
    assert inputs["serviceConfig"]["maxInstanceRequestConcurrency"] == 1
    members = [
        m for m, role, scope in stack.iam_bindings() if scope == "run service francine-reducer"
    ]
    assert members == [f"serviceAccount:{sa('pusher')}"]


WATCHDOG_JOB = "gcp:cloudscheduler/job:Job"


def test_watchdog_is_a_private_http_function_with_its_stall_time(stack):
    inputs = function(stack, "watchdog").inputs
    assert inputs["buildConfig"]["entryPoint"] == "watchdog"
    assert "eventTrigger" not in inputs
    service = inputs["serviceConfig"]
    assert service["maxInstanceCount"] == 1  # one sweep at a time is enough
    assert service["timeoutSeconds"] == 180
    # Re-drive only after a delivery that ran to its timeout also outlived its deadline.
    cfg = FrancineConfig(project=PROJECT)
    assert int(service["environmentVariables"]["FRANCINE_STALL_S"]) == (
        cfg.request_timeout_seconds + cfg.ack_deadline_seconds
    )
    members = [
        m for m, role, scope in stack.iam_bindings() if scope == "run service francine-watchdog"
    ]
    assert members == [f"serviceAccount:{sa('scheduler')}"]
    assert ("roles/run.invoker", "run service francine-watchdog") not in [
        (role, scope) for m, role, scope in stack.iam_bindings() if m == "allUsers"
    ]


def test_cloud_scheduler_calls_the_watchdog_every_minute_with_oidc(stack):
    (job,) = stack.of_type(WATCHDOG_JOB)
    inputs = job.inputs
    assert inputs["name"] == "francine-watchdog"
    assert inputs["region"] == "europe-west1"
    assert inputs["schedule"] == "* * * * *"
    target = inputs["httpTarget"]
    watchdog_uri = stack.outputs["watchdogUrl"]
    assert watchdog_uri.startswith("https://francine-watchdog")
    assert target["uri"] == watchdog_uri
    assert target["httpMethod"] == "POST"  # the function refuses anything else
    assert target["oidcToken"] == {"serviceAccountEmail": sa("scheduler"),
                                   "audience": watchdog_uri}
    assert "oauthToken" not in target
    assert inputs["retryConfig"]["retryCount"] == 0
    assert inputs["attemptDeadline"] == "180s"
    # The job calls only once the scheduler may invoke the watchdog.
    names = depends_on_names(stack, job)
    assert {"functions-watchdog-invoker-0", "invoker-propagation"} <= names
    assert "cloudscheduler.googleapis.com" in apis.REQUIRED_APIS
    hourly = run_program(DEFAULT_TEST_CONFIG | {"francine:watchdogSchedule": "0 * * * *"})
    (job,) = hourly.of_type(WATCHDOG_JOB)
    assert job.inputs["schedule"] == "0 * * * *"


def test_a_schedule_that_is_not_unix_cron_is_refused():
    with pytest.raises(ConfigError, match="watchdogSchedule"):
        FrancineConfig(project="p", watchdog_schedule="every minute")


def test_every_collection_group_query_of_the_code_has_its_index(stack):
    """Read the code's filtered collection-group queries (a ``collection_group(...)``
    call, or a helper returning one, followed by ``where`` filters): each has a declared
    single-field group index (one equality) or a composite group index."""
    import re

    declared_fields = {(f.inputs["collection"], (f.inputs["field"],))
                       for f in stack.of_type("gcp:firestore/field:Field")}
    declared = declared_fields | {
        (i.inputs["collection"], tuple(f["fieldPath"] for f in i.inputs["fields"]))
        for i in stack.of_type("gcp:firestore/index:Index")
        if i.inputs["queryScope"] == "COLLECTION_GROUP"}
    queries = set()
    for path in (ROOT / "shared" / "francine").rglob("*.py"):
        text = path.read_text()
        starts = [(m.end(), m.group(1)) for m in
                  re.finditer(r'collection_group\(\s*"(\w+)"\s*\)', text)]
        for helper, group in re.findall(
                r'def (\w+)\(.*\n(?:(?!def ).*\n)*?\s+return .*collection_group\(\s*"(\w+)"',
                text):
            starts += [(m.end(), group) for m in re.finditer(rf"{helper}\(ad\)", text)]
        for end, group in starts:
            statement = text[end:end + 400].split("\n\n")[0]
            filters = tuple(re.findall(r'FieldFilter\("(\w+)"', statement))
            if filters:
                queries.add((path.name, group, filters))
    for name, group, filters in queries:
        assert (group, filters) in declared, (name, group, filters)
    found = {(group, filters) for _, group, filters in queries}
    # the watchdog's sweep over active executions; the quotas of a user
    assert {("executions", ("status",)), ("executions", ("user", "status")),
            ("executions", ("user", "finished"))} <= found


def test_functions_build_into_the_stack_registry(stack):
    repository = f"projects/{PROJECT}/locations/europe-west1/repositories/francine"
    for key in ("api", "reducer", "watchdog"):
        assert function(stack, key).inputs["buildConfig"]["dockerRepository"] == repository


def test_every_component_gets_the_runtime_environment(stack):
    expected = {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "FRANCINE_RESOURCES_BUCKET": f"{PROJECT}-francine-resources",
        "FRANCINE_PARTIALS_BUCKET": f"{PROJECT}-francine-partials",
        "FRANCINE_RESULTS_BUCKET": f"{PROJECT}-francine-results",
        "FRANCINE_PRODUCE_TOPIC": "francine-produce",
        "FRANCINE_EVENTS_TOPIC": "francine-events",
        "FRANCINE_FIRESTORE_DATABASE": "(default)",
        "FRANCINE_MAX_TASK_S": "120",
        "FRANCINE_ADMISSION_LIMIT": "10",  # defaults to maxRenderInstances
        "FRANCINE_REDUCER_MEMORY_BYTES": str(1 << 30),  # reducerMemory 1Gi
        "FRANCINE_RENDER_CPU": "1",  # what a dry run prices
        "FRANCINE_RENDER_MEMORY_BYTES": str(2 << 30),
        "FRANCINE_REDUCER_CPU": "1",
        "FRANCINE_RENDER_SERVICE": f"projects/{PROJECT}/locations/europe-west1/services/"
        "francine-renderer",
        "FRANCINE_MAX_RENDER_INSTANCES": "10",
        "FRANCINE_FARM_SLOTS": "10",  # so does the farm's size
    }
    assert set(expected) == RUNTIME_ENV
    environments = [env_of_render(stack)] + [
        function(stack, key).inputs["serviceConfig"]["environmentVariables"]
        for key in ("api", "reducer", "watchdog")
    ]
    for env in environments:
        assert {k: env[k] for k in RUNTIME_ENV} == expected


def test_function_archives_contain_the_shared_library(stack):
    package = ROOT / "shared" / "francine"
    library = {
        f"francine/{p.relative_to(package).as_posix()}"
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert "francine/__init__.py" in library
    for key in ("api", "reducer", "watchdog"):
        obj = stack.named(f"functions-{key}-source").inputs
        archive = obj["source"]
        assert isinstance(archive, pulumi.AssetArchive)
        names = set(archive.assets)
        assert "main.py" in names
        assert library <= names, sorted(library - names)
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        assert obj["bucket"] == f"{PROJECT}-francine-sources"
        source = function(stack, key).inputs["buildConfig"]["source"]["storageSource"]
        assert source["object"] == obj["name"]
        requirements = archive.assets["requirements.txt"].text
        assert requirements == requirements_txt(ROOT / "pyproject.toml",
                                                FUNCTION_EXTRAS.get(key, ()))
        # Only the reducer denoises (the root reduction of blender images).
        assert ("pyoidn" in requirements) == (key == "reducer")


def test_requirements_are_the_runtime_dependencies_of_pyproject():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line for line in requirements_txt(ROOT / "pyproject.toml").splitlines()]
    assert [line for line in lines if not line.startswith("#")] == dependencies
    assert not any(line.startswith(("pulumi", "pytest", "ruff")) for line in lines)


def test_archive_digest_follows_the_content(tmp_path):
    for relative in ("functions/api/main.py", "shared/francine/__init__.py"):
        (tmp_path / relative).parent.mkdir(parents=True)
        (tmp_path / relative).write_text("x = 1\n")
    (tmp_path / "shared/francine/__pycache__").mkdir()
    (tmp_path / "shared/francine/__pycache__/x.pyc").write_bytes(b"\0")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["numpy"]\n')
    first = function_source(tmp_path, "api")
    assert set(first.entries) == {"main.py", "francine/__init__.py", "requirements.txt"}
    name = first.object_name
    assert name.startswith("functions/api-") and name.endswith(".zip")
    assert function_source(tmp_path, "api").object_name == name
    (tmp_path / "shared/francine/__init__.py").write_text("x = 2\n")
    assert function_source(tmp_path, "api").object_name != name
    with pytest.raises(FileNotFoundError):
        function_source(tmp_path, "reducer")


# --- Firestore, APIs, registry ---------------------------------------------------------


def test_firestore_is_native_and_removed_by_destroy(stack):
    (database,) = stack.of_type("gcp:firestore/database:Database")
    assert database.inputs["type"] == "FIRESTORE_NATIVE"
    assert database.inputs["name"] == "(default)"
    assert database.inputs["locationId"] == "europe-west1"
    assert database.inputs["deletionPolicy"] == "DELETE"
    assert database.inputs["deleteProtectionState"] == "DELETE_PROTECTION_DISABLED"


def test_firestore_has_the_composite_indexes_of_the_queries(stack):
    def indexes(scope):
        return {
            (
                i.inputs["collection"],
                tuple((f["fieldPath"], f["order"]) for f in i.inputs["fields"]),
            )
            for i in stack.of_type("gcp:firestore/index:Index")
            if i.inputs["queryScope"] == scope
        }

    assert ("sessions", (("user", "ASCENDING"), ("created", "ASCENDING"))) in indexes(
        "COLLECTION"
    )
    assert indexes("COLLECTION") == set(firestore.COMPOSITE_INDEXES)
    # The quota queries run over every session's executions.
    assert ("executions", (("user", "ASCENDING"), ("status", "ASCENDING"))) in indexes(
        "COLLECTION_GROUP"
    )
    # The farm's queue: waiting tasks of every execution in dispatch order, and by
    # fair-share tag (the farm's virtual time).
    for order in ("rank", "tag"):
        assert ("tasks", (("queue", "ASCENDING"), (order, "ASCENDING"))) in indexes(
            "COLLECTION_GROUP"
        )
    assert indexes("COLLECTION_GROUP") == set(firestore.COLLECTION_GROUP_INDEXES)
    for index in stack.of_type("gcp:firestore/index:Index"):
        assert index.inputs["database"] == "(default)"
    fields = stack.of_type("gcp:firestore/field:Field")
    # retention (which sessions name a resource); the watchdog (active executions); the
    # count of the farm's slots held
    assert {(f.inputs["collection"], f.inputs["field"]) for f in fields} == {
        ("resources", "sha256"),
        ("executions", "status"),
        ("tasks", "queue"),
    }
    for field in fields:
        scopes = {i["queryScope"] for i in field.inputs["indexConfig"]["indexes"]}
        assert scopes == {"COLLECTION", "COLLECTION_GROUP"}


def test_required_apis_are_enabled_and_left_enabled(stack):
    services = stack.of_type("gcp:projects/service:Service")
    enabled = {s.inputs["service"] for s in services}
    assert enabled == set(apis.REQUIRED_APIS)
    for api in ("run", "cloudfunctions", "cloudbuild", "artifactregistry", "pubsub", "firestore"):
        assert f"{api}.googleapis.com" in enabled
    assert all(s.inputs["disableOnDestroy"] is False for s in services)


def test_registry_keeps_the_newest_images_of_each_name(stack):
    (repository,) = stack.of_type("gcp:artifactregistry/repository:Repository")
    inputs = repository.inputs
    assert inputs["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in inputs["cleanupPolicies"]}
    assert policies["keep-newest"]["action"] == "KEEP"
    assert policies["keep-newest"]["mostRecentVersions"] == {"keepCount": 5}
    delete = policies["delete-old"]
    assert delete["action"] == "DELETE"
    assert delete["condition"] == {"tagState": "ANY", "olderThan": f"{7 * 86400}s"}
    tuned = run_program(
        DEFAULT_TEST_CONFIG | {"francine:imagesToKeep": "3", "francine:imageRetentionDays": "2"}
    )
    (repository,) = tuned.of_type("gcp:artifactregistry/repository:Repository")
    policies = {p["id"]: p for p in repository.inputs["cleanupPolicies"]}
    assert policies["keep-newest"]["mostRecentVersions"]["keepCount"] == 3
    assert policies["delete-old"]["condition"]["olderThan"] == f"{2 * 86400}s"


def test_registry_holds_docker_images(stack):
    (repository,) = stack.of_type("gcp:artifactregistry/repository:Repository")
    assert repository.inputs["format"] == "DOCKER"
    assert repository.inputs["location"] == "europe-west1"
    assert stack.outputs["imageRepository"] == f"europe-west1-docker.pkg.dev/{PROJECT}/francine"


# --- outputs, names, configuration ----------------------------------------------------


def test_outputs(stack):
    outputs = stack.outputs
    assert outputs["apiUrl"] == "https://francine-api-a1b2c3d4e5-ew.a.run.app"
    assert (
        outputs["apiFunctionUrl"]
        == f"https://europe-west1-{PROJECT}.cloudfunctions.net/francine-api"
    )
    assert outputs["resourcesBucket"] == f"{PROJECT}-francine-resources"
    assert outputs["partialsBucket"] == f"{PROJECT}-francine-partials"
    assert outputs["resultsBucket"] == f"{PROJECT}-francine-results"
    assert outputs["renderServiceUrl"].startswith("https://francine-renderer")
    assert outputs["serviceAccounts"]["renderer"] == sa("renderer")


def test_a_second_prefix_shares_nothing_with_the_first(stack):
    other = run_program(DEFAULT_TEST_CONFIG | {"francine:namePrefix": "blue"})

    def names(recording):
        return {
            r.inputs.get("name") or r.inputs.get("accountId")
            for r in recording.custom_resources
            if r.type in (SUBSCRIPTION, TOPIC, BUCKET, RUN_SERVICE, FUNCTION)
            or r.type == "gcp:serviceaccount/account:Account"
        }

    assert names(stack).isdisjoint(names(other))
    assert other.outputs["serviceAccounts"]["api"] == sa("api", prefix="blue")


def test_main_program_runs_under_mocks():
    mocks = RecordingMocks(project=PROJECT)
    pulumi.runtime.set_mocks(mocks, project="francine", stack="test", preview=False)
    pulumi.runtime.set_all_config(dict(DEFAULT_TEST_CONFIG))

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")

    program()
    assert len([r for r in mocks.resources if r.custom]) == len(run_program().custom_resources)


def test_config_defaults_and_derived_values():
    cfg = FrancineConfig(project="p")
    assert cfg.region == "us-central1"
    assert cfg.bucket_prefix == "p-francine"
    assert cfg.admission_limit == cfg.max_render_instances == 10
    assert cfg.request_timeout_seconds == cfg.max_task_s + cfg.task_overhead_seconds
    assert cfg.ack_deadline_seconds == cfg.request_timeout_seconds + cfg.ack_margin_seconds
    assert FrancineConfig(project="p", admission_limit=0).admission_limit == 0  # unlimited
    assert cfg.farm_slots == 10 and FrancineConfig(project="p", farm_slots=0).farm_slots == 0
    assert config.memory_mib("2Gi") == 2048 and config.memory_mib("512Mi") == 512


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_task_s": 560}, "600"),
        ({"render_cpu": "3"}, "renderCpu"),
        ({"render_cpu": "4", "render_memory": "1Gi"}, "renderMemory"),
        ({"render_memory": "256Mi"}, "renderMemory"),  # gen2 needs 512Mi
        ({"render_memory": "2GB"}, "Mi or Gi"),
        ({"execution_environment": "gen3"}, "executionEnvironment"),
        ({"max_render_instances": 0}, "maxRenderInstances"),
        ({"max_delivery_attempts": 3}, "maxDeliveryAttempts"),
        ({"partials_retention_days": 0}, "partialsRetentionDays"),
        ({"results_retention_days": -1}, "resultsRetentionDays"),
        ({"images_to_keep": 0}, "imagesToKeep"),
        ({"iam_propagation_seconds": 1000}, "iamPropagationSeconds"),
        ({"admission_limit": -1}, "admissionLimit"),
        ({"farm_slots": -1}, "farmSlots"),
        ({"name_prefix": "Francine"}, "namePrefix"),
        ({"name_prefix": "a-very-long-prefix-for-ids"}, "namePrefix"),
        ({"api_timeout_seconds": 4000}, "apiTimeoutSeconds"),
        ({"image": " "}, "image"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ConfigError, match=message):
        FrancineConfig(project="p", **changes)


def test_a_wrong_configuration_fails_before_any_resource():
    with pytest.raises(Exception, match="renderCpu"):
        run_program(DEFAULT_TEST_CONFIG | {"francine:renderCpu": "3"})


def test_describe_prints_resource_count_and_grants(capsys):
    import describe  # infra/describe.py

    assert describe.main([]) == 0
    out = capsys.readouterr().out
    print(out)  # visible with pytest -s: the default stack, counted
    assert f"{len(run_program().custom_resources)} cloud resources" in out
    assert f"serviceAccount:{sa('renderer')}" in out


def test_every_configuration_key_is_documented():
    import inspect
    import re

    source = inspect.getsource(config.load_config)
    keys = set(re.findall(r'(?:text|integer|boolean|items|conf\.get)\("(\w+)"', source))
    keys |= {f"gcp:{k}" for k in re.findall(r'gcp\.(?:require|get)\("(\w+)"', source)}
    assert len(keys) > 20
    readme = (ROOT / "infra" / "README.md").read_text()
    for key in keys:
        documented = key if key.startswith("gcp:") else f"francine:{key}"
        assert f"`{documented}`" in readme, f"{documented} is not in infra/README.md"


def test_autoscaling_doc_gives_the_cost_formula():
    doc = (ROOT / "infra" / "autoscaling.md").read_text()
    for needle in (
        "time.cpu",
        "P_vcpu",
        "P_gib",
        "maxRenderInstances",
        "renderCpu",
        "renderMemory",
        "admissionLimit",
        "concurrency 1",
    ):
        assert needle in doc, needle


# --- ordering: what an empty project needs first ----------------------------------------


def depends_on_names(recording, resource) -> set[str]:
    return {urn.rsplit("::", 1)[1] for urn in recording.depends_on(resource)}


def test_nothing_is_created_before_the_apis_it_needs(stack):
    services = {f"apis-{api.split('.')[0]}" for api in apis.REQUIRED_APIS}
    for resource in stack.custom_resources:
        if resource.type != "gcp:projects/service:Service":
            assert services <= depends_on_names(stack, resource), resource.name


def test_code_is_deployed_after_its_grants_and_pushed_to_after_its_invokers(stack):
    for key in ("api", "reducer", "watchdog"):
        names = depends_on_names(stack, stack.named(f"functions-{key}"))
        # The build account may build, the runtime account may work.
        assert {n for n in names if n.startswith("access-builder-")} == {
            "access-builder-project-logging-logWriter",
            "access-builder-project-storage-objectAdmin",
            "access-builder-repository-artifactregistry-writer",
        }
        assert any(n.startswith(f"access-{key}-") for n in names)
    assert any(
        n.startswith("access-renderer-") for n in depends_on_names(stack, stack.named("renderer"))
    )
    produce = depends_on_names(stack, stack.named("push-produce-render"))
    assert "renderer-invoker-0" in produce
    events = depends_on_names(stack, stack.named("push-events-reduce"))
    assert "functions-reducer-invoker-0" in events


SLEEP = "time:index/sleep:Sleep"


def test_builds_and_services_wait_for_the_grants_to_propagate(stack):
    wait = stack.named("iam-propagation")
    assert wait.type == SLEEP
    assert wait.inputs["createDuration"] == "180s"
    before_wait = depends_on_names(stack, wait)
    grants = {r.name for r in stack.custom_resources if r.name.startswith("access-")}
    assert "access-builder-repository-artifactregistry-writer" in grants
    assert "access-agent-token-creator" in grants
    assert grants <= before_wait, sorted(grants - before_wait)
    # Everything that uses a grant is declared after the wait.
    for name in ("functions-api", "functions-reducer", "renderer"):
        assert "iam-propagation" in depends_on_names(stack, stack.named(name)), name


def test_push_subscriptions_wait_for_their_invoker_grants(stack):
    wait = stack.named("invoker-propagation")
    assert wait.inputs["createDuration"] == "180s"
    invokers = {
        r.name for r in stack.of_type("gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
    }
    assert {"renderer-invoker-0", "functions-reducer-invoker-0"} <= invokers
    assert invokers <= depends_on_names(stack, wait)
    for sub in push_subscriptions(stack):
        assert "invoker-propagation" in depends_on_names(stack, sub), sub.name
    # The wait runs again when the grants it covers change (the render service added).
    first_pass = run_program({k: v for k, v in DEFAULT_TEST_CONFIG.items() if "image" not in k})
    assert (
        first_pass.named("invoker-propagation").inputs["triggers"]
        != wait.inputs["triggers"]
    )
    assert (
        first_pass.named("iam-propagation").inputs["triggers"]
        == stack.named("iam-propagation").inputs["triggers"]
    )


def test_the_wait_is_configurable_and_can_be_left_out():
    longer = run_program(DEFAULT_TEST_CONFIG | {"francine:iamPropagationSeconds": "420"})
    assert {w.inputs["createDuration"] for w in longer.of_type(SLEEP)} == {"420s"}
    none = run_program(DEFAULT_TEST_CONFIG | {"francine:iamPropagationSeconds": "0"})
    assert none.of_type(SLEEP) == []
    # Then the builds depend on the grants themselves.
    names = depends_on_names(none, none.named("functions-api"))
    assert "access-builder-repository-artifactregistry-writer" in names


def test_the_program_builds_the_shared_topology():
    from francine.domain import topology

    topology.check()
    recording = run_program()
    names = {r.inputs["name"] for r in recording.of_type(SUBSCRIPTION)}
    assert names == {f"francine-{r.key}" for r in topology.ROUTES} | {
        f"francine-{topology.HOLD.key}"
    }
    for r in topology.ROUTES:
        inputs = subscription(recording, f"francine-{r.key}").inputs
        assert inputs["deadLetterPolicy"]["deadLetterTopic"].endswith(f"/francine-{r.dead_letter}")
        assert inputs["topic"].endswith(f"/francine-{r.topic}")
    hold = subscription(recording, f"francine-{topology.HOLD.key}").inputs
    assert hold["messageRetentionDuration"] == f"{topology.HOLD.retention_s}s"


def test_the_render_image_builds_with_or_without_buildkit():
    import yaml

    build = yaml.safe_load((ROOT / "infra" / "cloudbuild.yaml").read_text())
    (step,) = build["steps"]
    builder = build["substitutions"]["_DOCKER_BUILDER"]
    assert step["name"] == "${_DOCKER_BUILDER}"
    image, _, tag = builder.rpartition(":")
    assert image == "gcr.io/cloud-builders/docker"
    assert tag and tag != "latest" and tag[0].isdigit(), "the builder must be pinned"
    # Nothing in the Dockerfile needs BuildKit, so DOCKER_BUILDKIT=0 builds it too.
    dockerfile = (ROOT / "functions" / "renderer" / "Dockerfile").read_text()
    instructions = [line.strip() for line in dockerfile.splitlines()
                    if line.strip() and not line.strip().startswith("#")]
    for line in instructions:
        assert not line.startswith("RUN --"), line
        assert "<<" not in line, line
        assert not (line.startswith(("COPY", "ADD")) and ("--chmod" in line or "--link" in line))


# --- the functions' side of the contract ------------------------------------------------


def registered_signature(name: str) -> str:
    """How functions-framework will serve ``functions/<name>/main.py``'s entry point."""
    import importlib.util

    from functions_framework import _function_registry

    path = ROOT / "functions" / name / "main.py"
    spec = importlib.util.spec_from_file_location(f"francine_function_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _function_registry.REGISTRY_MAP.get(name, "")


def test_entry_points_are_registered_with_their_signature():
    # Deployed without an event trigger, the platform sets FUNCTION_SIGNATURE_TYPE=http:
    # only the decorator makes functions-framework hand the reducer a CloudEvent.
    assert registered_signature("reducer") == "cloudevent"
    assert registered_signature("api") == "http"


def test_a_raw_push_to_a_topic_path_reaches_a_cloudevent_function(tmp_path, monkeypatch):
    """What our push subscriptions send, as functions-framework serves it."""
    import base64
    import json

    import functions_framework

    seen = tmp_path / "seen.json"
    source = tmp_path / "main.py"
    source.write_text(
        "import json, functions_framework\n"
        "@functions_framework.cloud_event\n"
        "def reducer(event):\n"
        f"    open({str(seen)!r}, 'w').write(json.dumps("
        "{'source': event['source'], 'data': event.data}))\n"
    )
    # create_app records the target and signature in the environment: undo it after.
    monkeypatch.delenv("FUNCTION_SIGNATURE_TYPE", raising=False)
    monkeypatch.delenv("FUNCTION_TARGET", raising=False)
    app = functions_framework.create_app(
        target="reducer", source=str(source), signature_type="http"
    )
    envelope = {
        "message": {
            "data": base64.b64encode(b'{"kind": "done"}').decode(),
            "attributes": {"CloudPubSubDeadLetterSourceSubscription": "francine-events-reduce"},
            "messageId": "42",
            "publishTime": "2024-01-01T00:00:00Z",
        },
        "subscription": f"projects/{PROJECT}/subscriptions/francine-events-dead-letter-reduce",
    }
    response = app.test_client().post(
        f"/projects/{PROJECT}/topics/francine-events-dead-letter", json=envelope
    )
    assert response.status_code == 200, response.data
    event = json.loads(seen.read_text())
    assert event["source"] == (
        f"//pubsub.googleapis.com/projects/{PROJECT}/topics/francine-events-dead-letter"
    )
    message = event["data"]["message"]
    assert message["data"] == envelope["message"]["data"]
    assert message["attributes"] == envelope["message"]["attributes"]


def test_readme_states_the_resource_count_of_a_default_stack(stack):
    import re

    readme = (ROOT / "infra" / "README.md").read_text()
    (count,) = re.findall(r"(\d+) cloud resources in \d+ components", readme)
    assert int(count) == len(stack.custom_resources)
