"""Who may do what: every runtime service's rights over the platform, declared once,
beside the topology (``francine.domain.topology``) whose topics they name.

Google enforces these in the cloud and the emulators do not: a publish to a topic that
a service's account may not publish to works in ``francine stack up`` and is a 403 in
production (where the push is then retried until its delivery attempts run out). So the
table is the one statement of each service's needs, and two things hold it to the code:

- the Pulumi program grants exactly this (``infra/francine_infra/iam.py`` maps each
  right to the narrowest role Google offers; ``tests/test_infra_rights.py`` checks the
  granted roles against the table under Pulumi's mocks);
- ``tests/test_rights.py`` runs the local stack with every port call of every process
  recorded (``francine.tools.local.audit``) through the paths that reach the rarer
  operations (failures, cancels, attaches, webhooks), and fails on any call that no
  right here allows, and on a right that no path needs.

A right is (service, action, target). Targets and their actions:

=====================  ==========================  =========================================
target                 actions                      what
=====================  ==========================  =========================================
``topic:<key>``        publish, inspect             a topic of ``topology.TOPICS``; inspect
                                                    lists its subscriptions (the render gate)
``bucket:<area>``      read, list, write, delete    resources, partials or results; write
                                                    creates or replaces an object
``bucket:external``    read                         a user's own bucket, attached by gs:// URL
``firestore``          read, write                  the database (Firestore has no finer IAM)
``render-service``     scale                        read and set its minimum instances
``self``               sign                         IAM signBlob as the service's own account
``internet``           fetch, post                  https:// attaches, webhooks (no IAM)
=====================  ==========================  =========================================

Pure data, no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

from francine.domain import topology

#: The runtime services, each with an account of its own in the cloud.
SERVICES: tuple[str, ...] = ("api", "renderer", "reducer", "watchdog")

#: The buckets of Francine's own data (the port's ``Area``).
AREAS: tuple[str, ...] = ("resources", "partials", "results")

#: Target kind → the actions a right on it may name.
ACTIONS: dict[str, frozenset[str]] = {
    "topic": frozenset({"publish", "inspect"}),
    "bucket": frozenset({"read", "list", "write", "delete"}),
    "firestore": frozenset({"read", "write"}),
    "render-service": frozenset({"scale"}),
    "self": frozenset({"sign"}),
    "internet": frozenset({"fetch", "post"}),
}

#: Targets that the deployment grants nothing on: an administrator grants the api read
#: on each user's bucket by hand (infra/README.md, "gs:// attaches"); the internet
#: takes no IAM at all.
UNGRANTED: frozenset[str] = frozenset({"bucket:external", "internet"})


@dataclass(frozen=True)
class Right:
    """``service`` may ``action`` on ``target``; ``why`` names the code that needs it."""

    service: str
    action: str
    target: str
    why: str

    @property
    def kind(self) -> str:
        return self.target.partition(":")[0]

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.service, self.action, self.target)


RIGHTS: tuple[Right, ...] = (
    # --- api -------------------------------------------------------------------------
    Right("api", "read", "firestore", "users, sessions, executions, status reads"),
    Right("api", "write", "firestore", "sessions, executions and their tasks, cancels"),
    Right("api", "publish", "topic:produce",
          "the first production tasks; the farm's dispatch when a cancel frees slots"),
    # Before the render service exists, produce has no subscription and what is
    # published there is lost: the api answers 503 until one exists.
    Right("api", "inspect", "topic:produce", "the render gate: is anything subscribed"),
    Right("api", "publish", "topic:execution-events", "executions created and cancelled"),
    Right("api", "read", "bucket:resources", "attach: is it stored; read back large uploads"),
    Right("api", "write", "bucket:resources", "store attached files; stage large uploads"),
    Right("api", "delete", "bucket:resources", "drop a staged upload once stored"),
    Right("api", "list", "bucket:resources",
          "garbage collection (the local stack's api; the cloud has lifecycle rules)"),
    Right("api", "read", "bucket:partials", "previews of a running execution"),
    Right("api", "list", "bucket:partials", "delete a session's partials"),
    Right("api", "delete", "bucket:partials", "delete a session's partials"),
    Right("api", "read", "bucket:results", "serve results"),
    Right("api", "list", "bucket:results", "delete a session's results"),
    Right("api", "delete", "bucket:results", "delete a session's results"),
    # A result larger than a response is served by a V4 signed URL: without a key file,
    # the api signs through IAM signBlob as itself.
    Right("api", "sign", "self", "signed URLs of large results"),
    Right("api", "read", "bucket:external", "resources attached by gs:// URL"),
    Right("api", "fetch", "internet", "resources attached by https:// URL"),
    # --- renderer --------------------------------------------------------------------
    Right("renderer", "read", "firestore", "the execution and its task"),
    Right("renderer", "write", "firestore", "claims, task status, failed passes"),
    Right("renderer", "read", "bucket:resources", "scene resources"),
    Right("renderer", "write", "bucket:partials", "partial images (create-only)"),
    Right("renderer", "read", "bucket:partials", "the pieces of a speculative copy"),
    Right("renderer", "publish", "topic:events", "finished tasks"),
    Right("renderer", "publish", "topic:produce",
          "a failed pass produced again; slots handed on when it fails an execution"),
    Right("renderer", "publish", "topic:execution-events",
          "an execution it fails (out of its failure budget)"),
    # --- reducer ---------------------------------------------------------------------
    Right("reducer", "read", "firestore", "elections, the execution"),
    Right("reducer", "write", "firestore",
          "reductions, finished executions, an animation's next frames"),
    Right("reducer", "read", "bucket:partials", "partials to combine"),
    Right("reducer", "write", "bucket:partials", "combined partials"),
    Right("reducer", "list", "bucket:partials", "a task event's claim: is its partial stored"),
    # A redelivered final reduction stores its image again.
    Right("reducer", "write", "bucket:results", "final images"),
    Right("reducer", "read", "bucket:results", "a task event's claim: is the image stored"),
    Right("reducer", "publish", "topic:events",
          "a reduction whose lost input is produced again, re-driven from its last child"),
    Right("reducer", "publish", "topic:produce",
          "admission: the next production tasks; an animation's next frames"),
    Right("reducer", "publish", "topic:execution-events", "executions it ends"),
    Right("reducer", "post", "internet", "notify_url webhooks"),
    # --- watchdog --------------------------------------------------------------------
    Right("watchdog", "read", "firestore", "stragglers, stalled executions"),
    Right("watchdog", "write", "firestore",
          "copies, re-driven and failed executions, an animation's missing frames"),
    Right("watchdog", "publish", "topic:produce", "speculative copies, re-driven tasks"),
    Right("watchdog", "publish", "topic:events", "re-driven reductions"),
    Right("watchdog", "publish", "topic:execution-events",
          "executions it resumes or fails"),
    # The one process that sets the render service's minimum instances
    # (francine.services.warmup.reconcile, every sweep): whoever may update a Cloud Run
    # service may also deploy another image to it, so no process that answers the
    # public or takes pushes holds it.
    Right("watchdog", "scale", "render-service", "the warm-up's minimum instances"),
)


def of(service: str) -> tuple[Right, ...]:
    """The rights of one service."""
    return tuple(r for r in RIGHTS if r.service == service)


def allowed() -> frozenset[tuple[str, str, str]]:
    """Every (service, action, target) that the table allows."""
    return frozenset(r.triple for r in RIGHTS)


def check() -> None:
    """Every right names a known service, target and action, once."""
    targets = ({f"topic:{key}" for key in topology.TOPICS}
               | {f"bucket:{area}" for area in AREAS} | UNGRANTED
               | {"firestore", "render-service", "self"})
    for r in RIGHTS:
        if r.service not in SERVICES:
            raise ValueError(f"{r.triple}: unknown service")
        if r.target not in targets:
            raise ValueError(f"{r.triple}: unknown target")
        if r.action not in ACTIONS[r.kind]:
            raise ValueError(f"{r.triple}: {r.kind} has no action {r.action!r}")
    if len(allowed()) != len(RIGHTS):
        raise ValueError("a right is declared twice")
