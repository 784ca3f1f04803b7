"""Who may do what: the grants of each service account, in one table.

Scopes are as narrow as the platform allows: a bucket, a topic, the repository.
Firestore has no per-collection IAM, so the four runtime accounts hold
``roles/datastore.user`` on the project. No account holds a basic role (owner,
editor, viewer). Invoker grants (``roles/run.invoker``) are made by the render service
and the functions themselves; dead-lettering grants by the push subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.accounts import ServiceAccounts
from francine_infra.messaging import Topics
from francine_infra.options import child_options
from francine_infra.registry import ArtifactRegistry
from francine_infra.storage import StorageBuckets


@dataclass(frozen=True)
class Grant:
    """``role`` on ``scope``: "project", "bucket:<key>", "topic:<key>" or "repository"."""

    role: str
    scope: str
    why: str


POLICY: dict[str, tuple[Grant, ...]] = {
    "api": (
        Grant("roles/datastore.user", "project", "users, sessions, executions, tasks"),
        Grant("roles/storage.objectUser", "bucket:resources", "store uploaded resources"),
        Grant("roles/storage.objectUser", "bucket:partials", "delete a session's partials"),
        Grant("roles/storage.objectUser", "bucket:results", "serve and delete results"),
        Grant("roles/pubsub.publisher", "topic:produce", "publish production tasks"),
        # Before the render service exists, produce has no subscription and what is
        # published there is lost: the api lists the topic's subscriptions (which takes
        # pubsub.topics.get) and answers 503 until one exists.
        Grant("roles/pubsub.viewer", "topic:produce", "see whether renders can be taken"),
        Grant("roles/pubsub.publisher", "topic:execution-events", "announce new executions"),
        # A result larger than a response is served by a V4 signed URL: without a key
        # file, the api signs through IAM signBlob as itself.
        Grant("roles/iam.serviceAccountTokenCreator", "account:api", "sign result URLs"),
    ),
    "renderer": (
        Grant("roles/datastore.user", "project", "task status, cancellation"),
        Grant("roles/storage.objectViewer", "bucket:resources", "read scene resources"),
        # objectUser, not objectCreator: a redelivered task overwrites its partial,
        # which needs storage.objects.delete.
        Grant("roles/storage.objectUser", "bucket:partials", "write partial images"),
        Grant("roles/pubsub.publisher", "topic:events", "announce finished tasks"),
    ),
    "reducer": (
        Grant("roles/datastore.user", "project", "elect reducers, finish executions"),
        Grant("roles/storage.objectUser", "bucket:partials", "read partials, write reductions"),
        Grant("roles/storage.objectUser", "bucket:results", "store final images"),
        Grant("roles/pubsub.publisher", "topic:events", "announce finished reductions"),
        # Admission control: when a task finishes, the scheduler releases the next ones.
        Grant("roles/pubsub.publisher", "topic:produce", "publish admitted production tasks"),
        Grant("roles/pubsub.publisher", "topic:execution-events", "announce ended executions"),
    ),
    "watchdog": (
        Grant("roles/datastore.user", "project", "find stragglers and stalled executions"),
        Grant("roles/pubsub.publisher", "topic:produce", "speculative copies, re-driven tasks"),
        Grant("roles/pubsub.publisher", "topic:events", "re-driven reductions"),
        Grant("roles/pubsub.publisher", "topic:execution-events",
              "announce executions it resumes"),
    ),
    "pusher": (),  # only roles/run.invoker on the render service and the reducer
    "scheduler": (),  # only roles/run.invoker on the watchdog
    "builder": (
        Grant("roles/logging.logWriter", "project", "build logs"),
        Grant("roles/artifactregistry.writer", "repository", "push built images"),
        # Google's documented requirement for a custom build account of 2nd gen
        # functions: the build reads the source from a Google-managed bucket
        # (gcf-v2-sources-*) that does not exist before the first deployment.
        Grant("roles/storage.objectAdmin", "project", "read function sources"),
    ),
}

FORBIDDEN_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})


@dataclass
class AccessPolicyArgs:
    project: str
    accounts: ServiceAccounts
    buckets: StorageBuckets
    topics: Topics
    registry: ArtifactRegistry
    policy: dict[str, tuple[Grant, ...]] | None = None


class AccessPolicy(pulumi.ComponentResource):
    """Makes every grant of ``POLICY``; ``grants`` is the list of IAM member resources."""

    def __init__(
        self, name: str, args: AccessPolicyArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:AccessPolicy", name, None, opts)
        child = child_options(self, opts)
        self.grants: list[pulumi.CustomResource] = []
        for account, grants in (args.policy or POLICY).items():
            member = args.accounts.member(account)
            for grant in grants:
                if grant.role in FORBIDDEN_ROLES:
                    raise ValueError(f"{account}: {grant.role} is a basic role; grant less")
                resource_name = f"{name}-{account}-{grant.scope.replace(':', '-')}-" + (
                    grant.role.removeprefix("roles/").replace(".", "-")
                )
                self.grants.append(self._grant(resource_name, args, grant, member, child))
        self.register_outputs({})

    @staticmethod
    def _grant(
        resource_name: str,
        args: AccessPolicyArgs,
        grant: Grant,
        member: pulumi.Output[str],
        opts: pulumi.ResourceOptions,
    ) -> pulumi.CustomResource:
        kind, _, key = grant.scope.partition(":")
        if kind == "project":
            return gcp.projects.IAMMember(
                resource_name, project=args.project, role=grant.role, member=member, opts=opts
            )
        if kind == "bucket":
            return gcp.storage.BucketIAMMember(
                resource_name,
                bucket=args.buckets.name(key),
                role=grant.role,
                member=member,
                opts=opts,
            )
        if kind == "topic":
            return gcp.pubsub.TopicIAMMember(
                resource_name,
                project=args.project,
                topic=args.topics[key].name,
                role=grant.role,
                member=member,
                opts=opts,
            )
        if kind == "account":
            return gcp.serviceaccount.IAMMember(
                resource_name,
                service_account_id=args.accounts.accounts[key].name,
                role=grant.role,
                member=member,
                opts=opts,
            )
        if kind == "repository":
            repository = args.registry.repository
            return gcp.artifactregistry.RepositoryIamMember(
                resource_name,
                project=args.project,
                location=repository.location,
                repository=repository.repository_id,
                role=grant.role,
                member=member,
                opts=opts,
            )
        raise ValueError(f"unknown scope {grant.scope!r}")
