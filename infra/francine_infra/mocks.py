"""Run the program under ``pulumi.runtime.set_mocks`` and record what it declares.

Used by ``tests/test_infra*.py`` and by ``infra/describe.py``. The mocks echo every
resource's inputs back as its state and add the outputs a real provider would compute
and the program reads (service account emails, service URIs, topic ids, the project
number), so the recorded inputs are exactly what ``pulumi up`` would send.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.mocks import MockMonitor

DEFAULT_TEST_CONFIG: dict[str, str] = {
    "gcp:project": "francine-test",
    "gcp:region": "europe-west1",
    "francine:image": "europe-west1-docker.pkg.dev/francine-test/francine/renderer:v1",
}
PROJECT_NUMBER = "123456789012"


@dataclass
class MockedResource:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool = True


@dataclass
class Recording:
    resources: list[MockedResource]
    outputs: dict[str, Any]
    calls: list[str] = field(default_factory=list)
    # (type, name) → the URNs the resource was registered as depending on.
    dependencies: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def depends_on(self, resource: MockedResource) -> list[str]:
        return self.dependencies.get((resource.type, resource.name), [])

    def of_type(self, type_token: str) -> list[MockedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> MockedResource:
        """The custom resource (not component) called ``name``."""
        (found,) = [r for r in self.resources if r.name == name and r.custom]
        return found

    @property
    def custom_resources(self) -> list[MockedResource]:
        return [r for r in self.resources if r.custom]

    def iam_bindings(self) -> list[tuple[str, str, str]]:
        """(member, role, scope) of every IAM member resource of the stack."""
        bindings = []
        for r in self.resources:
            if not r.type.endswith(("IAMMember", "IamMember")):
                continue
            scope_type = r.type.split(":")[1].split("/")[0]
            target = (
                r.inputs.get("bucket")
                or r.inputs.get("topic")
                or r.inputs.get("subscription")
                or r.inputs.get("repository")
                or r.inputs.get("serviceAccountId")
                or (r.inputs.get("name") if scope_type == "cloudrunv2" else None)
                or r.inputs.get("project")
            )
            kind = {
                "projects": "project",
                "storage": "bucket",
                "cloudrunv2": "run service",
                "artifactregistry": "repository",
                "serviceaccount": "service account",
            }.get(scope_type, scope_type)
            if scope_type == "pubsub":
                kind = "topic" if "topic" in r.inputs else "subscription"
            bindings.append((r.inputs["member"], r.inputs["role"], f"{kind} {target}"))
        return bindings

    def roles_by_member(self) -> dict[str, list[tuple[str, str]]]:
        by_member: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for member, role, scope in self.iam_bindings():
            by_member[member].append((role, scope))
        return {member: sorted(roles) for member, roles in sorted(by_member.items())}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, project: str, project_number: str = PROJECT_NUMBER):
        self.project = project
        self.project_number = project_number
        self.resources: list[MockedResource] = []
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        inputs = dict(args.inputs)
        self.resources.append(MockedResource(args.typ, args.name, inputs, args.custom))
        state = dict(inputs)
        project = inputs.get("project", self.project)
        resource_id = f"{args.name}-id"
        typ = args.typ
        if typ == "gcp:serviceaccount/account:Account":
            email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
            resource_id = f"projects/{project}/serviceAccounts/{email}"
            state.update(email=email, name=resource_id, member=f"serviceAccount:{email}")
        elif typ == "gcp:cloudrunv2/service:Service":
            state["uri"] = f"https://{inputs['name']}-a1b2c3d4e5-ew.a.run.app"
        elif typ == "gcp:cloudfunctionsv2/function:Function":
            name, region = inputs["name"], inputs["location"]
            resource_id = f"projects/{project}/locations/{region}/functions/{name}"
            state["url"] = f"https://{region}-{project}.cloudfunctions.net/{name}"
            state["serviceConfig"] = {
                **inputs.get("serviceConfig", {}),
                "uri": f"https://{name}-a1b2c3d4e5-ew.a.run.app",
                "service": f"projects/{project}/locations/{region}/services/{name}",
            }
        elif typ == "gcp:pubsub/topic:Topic":
            resource_id = f"projects/{project}/topics/{inputs['name']}"
        elif typ == "gcp:pubsub/subscription:Subscription":
            resource_id = f"projects/{project}/subscriptions/{inputs['name']}"
        elif typ == "gcp:artifactregistry/repository:Repository":
            repo = inputs["repositoryId"]
            resource_id = f"projects/{project}/locations/{inputs['location']}/repositories/{repo}"
            state["name"] = repo
        elif typ == "gcp:storage/bucket:Bucket":
            resource_id = inputs["name"]
            state["url"] = f"gs://{inputs['name']}"
        elif typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            # What generateServiceIdentity answers: the agent of the service.
            agent = inputs["service"].split(".")[0]
            email = f"service-{self.project_number}@gcp-sa-{agent}.iam.gserviceaccount.com"
            state.update(email=email, member=f"serviceAccount:{email}")
        elif typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            resource_id = f"projects/{project}/roles/{inputs['roleId']}"
            state["name"] = resource_id
        elif typ == "gcp:firestore/database:Database":
            resource_id = f"projects/{project}/databases/{inputs['name']}"
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getProject:getProject":
            project = args.args.get("projectId", self.project)
            return {"number": self.project_number, "projectId": project, "name": project}
        return {}


class RecordingMonitor(MockMonitor):
    """A mock monitor that also records each resource's dependencies (URNs)."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.dependencies: dict[tuple[str, str], list[str]] = {}

    def RegisterResource(self, request):  # noqa: N802 (the gRPC method's name)
        self.dependencies[(request.type, request.name)] = list(request.dependencies)
        return super().RegisterResource(request)


def run_program(config: Mapping[str, str] | None = None) -> Recording:
    """Run ``build_stack(load_config())`` with ``config`` (default: DEFAULT_TEST_CONFIG)."""
    from francine_infra.config import load_config
    from francine_infra.stack import build_stack

    config = dict(DEFAULT_TEST_CONFIG if config is None else config)
    mocks = RecordingMocks(project=config.get("gcp:project", "francine-test"))
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="francine", stack="test", preview=False, monitor=monitor
    )
    pulumi.runtime.set_all_config(config)
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program():
        exported = build_stack(load_config())
        return pulumi.Output.from_input(exported).apply(outputs.update)

    program()
    return Recording(
        resources=mocks.resources,
        outputs=outputs,
        calls=mocks.calls,
        dependencies=monitor.dependencies,
    )
