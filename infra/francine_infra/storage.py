"""The Cloud Storage buckets: resources, partial images, results, function sources.

Soft delete: Google keeps a deleted object, billed, for 7 days unless a bucket says
otherwise, and ``pulumi destroy`` deletes every object; so a destroyed stack would bill
its data for another week. Partials and function archives are disposable (made again by
the next render, the next ``pulumi up``): no soft delete. Results and resources can be
made again too (a render again, an attach again), and everything Francine deletes there
it deletes on purpose (a session deleted, an upload staged, the lifecycle rules): no
soft delete either, unless ``softDeleteDays`` (7 to 90) asks to keep what is deleted
recoverable for that long.

CORS: the viewer (served by the api) fetches a result larger than a response through
the api's 307 redirect to a V4 signed URL on ``storage.googleapis.com``, another
origin, and reads it only if the results bucket answers with CORS headers. Only GET
and HEAD are allowed, with no credentials: a signed URL is its own authorisation,
so whoever can send it can already read the object with any HTTP client; CORS only
lets a page read what its URL already grants. The origins are
``resultsCorsOrigins`` ("*" unless set: the api has two URLs, its run.app one and its
function URL, and may have a domain of its own).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options

# key → what it holds (a label and the README's table).
BUCKETS: dict[str, str] = {
    "resources": "content-addressed scene resources, resources/{sha256}",
    "partials": "partial images, partials/{sid}/{eid}/...; deleted after the retention",
    "results": "final images, results/{sid}/{eid}.{ext}",
    "sources": "the function source archives and Cloud Build staging",
}


def delete_after(days: int) -> list[gcp.storage.BucketLifecycleRuleArgs]:
    """A lifecycle rule deleting objects ``days`` after they were written; none for 0."""
    if days <= 0:
        return []
    return [
        gcp.storage.BucketLifecycleRuleArgs(
            action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
            condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=days),
        )
    ]


@dataclass
class StorageBucketsArgs:
    project: str
    location: str
    name_prefix: str
    partials_retention_days: int
    # Days after which the other buckets' objects are deleted (0: kept forever).
    # Resources are shared by content between sessions, so a deleted session leaves its
    # resources behind: the rule is what removes them. A session that still renders
    # with an expired resource attaches it again (the same bytes: one upload).
    results_retention_days: int = 0
    resources_retention_days: int = 0
    # Function archives: the deployed function keeps its own copy of its source.
    sources_retention_days: int = 0
    # Let `pulumi destroy` delete buckets that still hold objects.
    force_destroy: bool = True
    labels: dict[str, str] | None = None
    # Days a deleted result or resource stays recoverable (and billed); 0: none.
    soft_delete_days: int = 0
    # Origins whose pages may read results through signed URLs (the viewer's).
    results_cors_origins: tuple[str, ...] = ("*",)


#: Buckets whose deleted objects are never kept: made again by the pipeline or the
#: program.
DISPOSABLE = ("partials", "sources")
#: How long a browser may cache the answer to a CORS preflight.
CORS_MAX_AGE_SECONDS = 3600


def soft_delete(days: int) -> gcp.storage.BucketSoftDeletePolicyArgs:
    """Deleted objects kept ``days`` (0: deleted at once, nothing billed after)."""
    return gcp.storage.BucketSoftDeletePolicyArgs(retention_duration_seconds=days * 86400)


def results_cors(origins: tuple[str, ...]) -> list[gcp.storage.BucketCorArgs]:
    """GET (and HEAD) of signed result URLs from ``origins``' pages; none if empty."""
    if not origins:
        return []
    return [
        gcp.storage.BucketCorArgs(
            origins=list(origins),
            methods=["GET", "HEAD"],
            response_headers=["Content-Type", "Content-Length"],
            max_age_seconds=CORS_MAX_AGE_SECONDS,
        )
    ]


class StorageBuckets(pulumi.ComponentResource):
    """``buckets[key]`` for each key of ``BUCKETS``, named ``<prefix>-<key>``.

    All buckets use uniform bucket-level access (grants are per bucket, never per
    object) and enforce public access prevention: results are served by the api, not
    by public URLs.
    """

    def __init__(
        self, name: str, args: StorageBucketsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:StorageBuckets", name, None, opts)
        self.buckets: dict[str, gcp.storage.Bucket] = {}
        retention = {
            # Partial images are intermediate: the reducer reads them within minutes;
            # the rule removes what a failed or cancelled execution left.
            "partials": args.partials_retention_days,
            "results": args.results_retention_days,
            "resources": args.resources_retention_days,
            "sources": args.sources_retention_days,
        }
        for key in BUCKETS:
            extra: dict = {
                "lifecycle_rules": delete_after(retention[key]),
                "soft_delete_policy": soft_delete(
                    0 if key in DISPOSABLE else args.soft_delete_days
                ),
            }
            if key == "results":
                extra["cors"] = results_cors(args.results_cors_origins)
            self.buckets[key] = gcp.storage.Bucket(
                f"{name}-{key}",
                project=args.project,
                name=f"{args.name_prefix}-{key}",
                location=args.location,
                storage_class="STANDARD",
                uniform_bucket_level_access=True,
                public_access_prevention="enforced",
                force_destroy=args.force_destroy,
                labels={**(args.labels or {}), "francine-bucket": key},
                opts=child_options(self, opts),
                **extra,
            )
        self.register_outputs({key: bucket.name for key, bucket in self.buckets.items()})

    def name(self, key: str) -> pulumi.Output[str]:
        return self.buckets[key].name
