"""The Firestore database (native mode) and the composite indexes Francine's queries need.

The queries of ``shared/francine/adapters/store.py`` and the index each one uses:

==========================================================  =================================
query                                                       index
==========================================================  =================================
``sessions`` where ``user ==`` order by ``created``          composite (user, created)
``sessions/{sid}/executions`` order by ``created``           single-field, automatic
``sessions/{sid}/resources`` (all of them)                   none
``tasks`` where ``parent ==`` and ``status ==``, count       single-field, merged: automatic
``tasks`` where ``status ==``, count                         single-field, automatic
``tasks`` where ``kind ==`` and ``status ==``,               composite (kind, status, cpu_s,
sum ``fetch_s``, ``work_s``, ``cpu_s``, count                fetch_s, work_s)
``tasks`` order by ``started`` limit 1                       single-field, automatic
``tasks`` where ``kind ==`` order by ``finished`` desc       composite (kind, finished desc)
``tasks`` where ``status in``                                single-field, automatic
``tasks`` where ``failures >``                               single-field, automatic
``tasks`` where ``attempts``/``generation``/``redrives >``,  single-field, automatic
``speculated ==`` (count)
``tasks`` order by ``started``/``finished`` desc limit 1     single-field, automatic
group ``executions`` where ``status ==``                    collection-group field (status)
group ``executions`` where ``user ==`` and ``status ==``     collection-group (user, status)
group ``executions`` where ``user ==`` and ``finished >=``   collection-group (user, finished)
group ``resources`` where ``sha256 ==``                     collection-group field (sha256)
``tasks`` where ``status ==``, ``speculated ==``            composite (status, speculated,
order by ``started`` (asc or desc) limit k                   started), one per direction
``tasks`` (group) where ``queue ==`` order by ``rank``       group composite (queue, rank)
``tasks`` (group) where ``queue ==`` order by ``tag``        group composite (queue, tag)
``tasks`` (group) where ``queue ==``, count                  group single-field (queue)
``farms/{farm}/users`` order by ``finish`` desc limit 1      single-field, automatic
==========================================================  =================================

The watchdog runs the ``status in``/``failures``/recovery queries and the group query
on ``executions.status`` (its sweep over the active executions); the api's failed-task
listing reads ``failures >``; the quotas read the executions of a user.

Firestore keeps a single-field index of every field automatically and serves
equality-only filters by merging them, so counts over equalities need nothing. A filter
on one field with an order on another needs a composite index, and so does a ``sum()``
under filters: Firestore computes it from index entries, so the summed fields must be in
the index the filters use. A collection-group query needs collection-group indexes,
which are never automatic, single-field ones included: those are declared as fields
(``COLLECTION_GROUP_FIELDS``); the farm's queue (``francine.services.farm``) declares its own.

The emulator enforces no index at all: a query that works in the local stack can still
fail in the cloud with ``FAILED_PRECONDITION: The query requires an index``. The error
names the missing index; add it to ``COMPOSITE_INDEXES``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import after, child_options

# (collection, ((field, order), ...)): add one here when the code gains such a query.
COMPOSITE_INDEXES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    # list_sessions
    ("sessions", (("user", "ASCENDING"), ("created", "ASCENDING"))),
    # task_stats: the sums per kind of the done tasks
    (
        "tasks",
        (
            ("kind", "ASCENDING"),
            ("status", "ASCENDING"),
            ("cpu_s", "ASCENDING"),
            ("fetch_s", "ASCENDING"),
            ("work_s", "ASCENDING"),
        ),
    ),
    # task_stats: the last production task to finish
    ("tasks", (("kind", "ASCENDING"), ("finished", "DESCENDING"))),
    # longest_running: the end game's candidates for a backup copy (none yet), those
    # that started first and those that started last
    ("tasks", (("status", "ASCENDING"), ("speculated", "ASCENDING"),
               ("started", "ASCENDING"))),
    ("tasks", (("status", "ASCENDING"), ("speculated", "ASCENDING"),
               ("started", "DESCENDING"))),
)

# The same across every parent (collection-group queries): never automatic.
COLLECTION_GROUP_INDEXES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    # quotas.in_flight: a user's executions by status
    ("executions", (("user", "ASCENDING"), ("status", "ASCENDING"))),
    # quotas.finished_today: a user's executions finished since a time
    ("executions", (("user", "ASCENDING"), ("finished", "ASCENDING"))),
    # farm.dispatch_now: the farm's waiting tasks in dispatch order
    ("tasks", (("queue", "ASCENDING"), ("rank", "ASCENDING"))),
    # farm.enqueue: the farm's virtual time, the lowest fair-share tag waiting
    ("tasks", (("queue", "ASCENDING"), ("tag", "ASCENDING"))),
)

# (collection, field): single-field indexes a collection-group equality filter needs
# (retention: which sessions still name a resource; the watchdog: the executions not
# final yet, in every session; farm.dispatch_now: the slots held).
COLLECTION_GROUP_FIELDS: tuple[tuple[str, str], ...] = (
    ("resources", "sha256"),
    ("executions", "status"),
    ("tasks", "queue"),
)


def index_names(
    name: str,
) -> list[tuple[str, str, tuple[tuple[str, str], ...], str]]:
    """(query scope, collection, fields, resource name) of every composite index.

    Names keep their earlier form, "<name>-<collection>-<fields>" for collection indexes
    and "<name>-group-<collection>-<fields>" for collection-group ones (a new name
    would replace the index), but for two indexes on the same fields in other orders:
    those name their descending fields "<field>-desc", since two resources of one name
    are refused by Pulumi (a duplicate URN).
    """
    tables = (("COLLECTION", "", COMPOSITE_INDEXES),
              ("COLLECTION_GROUP", "group-", COLLECTION_GROUP_INDEXES))

    def plain(prefix: str, collection: str, fields: tuple[tuple[str, str], ...]) -> str:
        return f"{name}-{prefix}{collection}-{'-'.join(f for f, _ in fields)}"

    counts: dict[str, int] = {}
    for _, prefix, indexes in tables:
        for collection, fields in indexes:
            key = plain(prefix, collection, fields)
            counts[key] = counts.get(key, 0) + 1
    out = []
    for scope, prefix, indexes in tables:
        for collection, fields in indexes:
            resource_name = plain(prefix, collection, fields)
            if counts[resource_name] > 1:
                resource_name = f"{name}-{prefix}{collection}-" + "-".join(
                    f + ("-desc" if order == "DESCENDING" else "") for f, order in fields)
            out.append((scope, collection, fields, resource_name))
    return out


@dataclass
class FirestoreDbArgs:
    project: str
    location: str
    database: str = "(default)"
    # `pulumi destroy` deletes the database with its data; "ABANDON" would keep it.
    deletion_policy: str = "DELETE"


class FirestoreDb(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: FirestoreDbArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:FirestoreDb", name, None, opts)
        self.database = gcp.firestore.Database(
            name,
            project=args.project,
            name=args.database,
            location_id=args.location,
            type="FIRESTORE_NATIVE",
            delete_protection_state="DELETE_PROTECTION_DISABLED",
            deletion_policy=args.deletion_policy,
            opts=child_options(self, opts),
        )
        # One at a time: a new database refuses index and field changes made at once
        # with 409 "cross-transaction contention" (a known limit of the provider's
        # resources), so each one waits for the one before it.
        previous: pulumi.Resource = self.database
        self.indexes: list[gcp.firestore.Index] = []
        for scope, collection, fields, resource_name in index_names(name):
            previous = gcp.firestore.Index(
                resource_name,
                project=args.project,
                database=self.database.name,
                collection=collection,
                query_scope=scope,
                fields=[
                    gcp.firestore.IndexFieldArgs(field_path=field_path, order=order)
                    for field_path, order in fields
                ],
                opts=after(self, opts, previous),
            )
            self.indexes.append(previous)
        self.fields: list[gcp.firestore.Field] = []
        for collection, field in COLLECTION_GROUP_FIELDS:
            previous = gcp.firestore.Field(
                f"{name}-group-{collection}-{field}",
                project=args.project,
                database=self.database.name,
                collection=collection,
                field=field,
                index_config=gcp.firestore.FieldIndexConfigArgs(
                    indexes=[
                        gcp.firestore.FieldIndexConfigIndexArgs(
                            order="ASCENDING", query_scope=scope
                        )
                        for scope in ("COLLECTION", "COLLECTION_GROUP")
                    ]
                ),
                opts=after(self, opts, previous),
            )
            self.fields.append(previous)
        self.name = self.database.name
        self.register_outputs({"database": self.database.name})
