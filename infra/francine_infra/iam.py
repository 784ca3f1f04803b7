"""Who may do what: the grants of each service account, derived from one table.

The runtime services' rights (api, renderer, reducer, watchdog) are declared once, in
``francine.domain.rights``, beside the topology; ``runtime_grants`` turns each service's
rights into the narrowest roles Google offers for them, and ``AccessPolicy`` grants
those, no more. ``tests/test_rights.py`` runs the local stack with every call of every
process recorded and checks them against the same table, so a call the code makes and
the account may not make fails a test instead of a push in production.

Scopes are as narrow as the platform allows: a bucket, a topic, an account, the
repository. Firestore has no per-collection IAM, so the runtime accounts hold
``roles/datastore.user`` on the project. No account holds a basic role (owner, editor,
viewer). The deployment's own accounts (``pusher``, ``scheduler``, ``builder``) are
in ``DEPLOYMENT_GRANTS``. Invoker grants (``roles/run.invoker``) are made by the render
service and the functions themselves, and so is the scaler role on the render service
(it exists only once the service does); dead-lettering grants by the push subscriptions.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine.domain import rights
from francine_infra.accounts import ServiceAccounts
from francine_infra.messaging import Topics
from francine_infra.options import child_options
from francine_infra.registry import ArtifactRegistry
from francine_infra.storage import StorageBuckets


@dataclass(frozen=True)
class Grant:
    """``role`` on ``scope``: "project", "bucket:<key>", "topic:<key>", "account:<key>"
    or "repository"."""

    role: str
    scope: str
    why: str


#: What the warm-up needs on the render service, and nothing else that
#: ``roles/run.developer`` holds (deleting the service, reading its IAM policy, every
#: revision): a custom role, granted on the service only (``render_service.py``).
SCALER_PERMISSIONS: tuple[str, ...] = ("run.services.get", "run.services.update")


def _bucket_role(actions: set[str]) -> str:
    """Read and list: ``objectViewer``. Anything that creates, replaces or deletes
    objects: ``objectUser`` (``objectCreator`` cannot replace, and a create-only
    write that finds its object needs to learn so as a 412, not a 403)."""
    return ("roles/storage.objectUser" if actions & {"write", "delete"}
            else "roles/storage.objectViewer")


def runtime_grants(
    table: tuple[rights.Right, ...] = rights.RIGHTS,
) -> dict[str, tuple[Grant, ...]]:
    """Service → the grants its rights need (the render service's scaler role aside:
    see ``scalers``)."""
    by_scope: dict[tuple[str, str], dict[str, list[str]]] = defaultdict(
        lambda: defaultdict(list))
    for right in table:
        if right.target not in rights.UNGRANTED:
            by_scope[(right.service, right.target)][right.action].append(right.why)
    grants: dict[str, list[Grant]] = {service: [] for service in rights.SERVICES}
    for (service, target), actions in by_scope.items():
        why = "; ".join(w for whys in actions.values() for w in whys)
        kind, _, key = target.partition(":")
        if kind == "topic":
            roles = {"publish": "roles/pubsub.publisher", "inspect": "roles/pubsub.viewer"}
            grants[service] += [Grant(roles[a], target, "; ".join(actions[a]))
                                for a in sorted(actions)]
        elif kind == "bucket":
            grants[service].append(Grant(_bucket_role(set(actions)), target, why))
        elif kind == "firestore":
            role = "roles/datastore.user" if "write" in actions else "roles/datastore.viewer"
            grants[service].append(Grant(role, "project", why))
        elif kind == "self":  # signBlob as itself
            grants[service].append(
                Grant("roles/iam.serviceAccountTokenCreator", f"account:{service}", why))
        elif kind == "render-service":
            # Updating a Cloud Run service acts as its runtime account.
            grants[service].append(
                Grant("roles/iam.serviceAccountUser", "account:renderer", why))
        else:
            raise ValueError(f"{service}: no grant for {target}")
    return {service: tuple(gs) for service, gs in grants.items()}


def scalers(table: tuple[rights.Right, ...] = rights.RIGHTS) -> list[str]:
    """The services that hold the scaler role on the render service."""
    return [r.service for r in table if (r.action, r.target) == ("scale", "render-service")]


#: The grants of the deployment's own identities.
DEPLOYMENT_GRANTS: dict[str, tuple[Grant, ...]] = {
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

POLICY: dict[str, tuple[Grant, ...]] = {**runtime_grants(), **DEPLOYMENT_GRANTS}

FORBIDDEN_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})


@dataclass
class AccessPolicyArgs:
    project: str
    accounts: ServiceAccounts
    buckets: StorageBuckets
    topics: Topics
    registry: ArtifactRegistry
    name_prefix: str = "francine"
    policy: dict[str, tuple[Grant, ...]] | None = None


class AccessPolicy(pulumi.ComponentResource):
    """Makes every grant of ``POLICY`` and the render service's scaler role
    (``scaler_role``); ``grants`` is the list of IAM member resources."""

    def __init__(
        self, name: str, args: AccessPolicyArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:AccessPolicy", name, None, opts)
        child = child_options(self, opts)
        # Role ids allow letters, digits, "_" and "."; one role per prefix, so that two
        # stacks in one project keep theirs. A destroyed role stays reserved for 37
        # days; the provider undeletes it when the stack is created again.
        self.scaler_role = gcp.projects.IAMCustomRole(
            f"{name}-render-scaler",
            project=args.project,
            role_id=f"{args.name_prefix.replace('-', '_')}_render_scaler",
            title=f"{args.name_prefix} render service scaler",
            description="Read and set the render service's minimum instances (the warm-up)",
            permissions=list(SCALER_PERMISSIONS),
            opts=child,
        )
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
