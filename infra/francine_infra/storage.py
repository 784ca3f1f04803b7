"""The Cloud Storage buckets: resources, partial images, results, function sources."""

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
            extra: dict = {"lifecycle_rules": delete_after(retention[key])}
            if key == "partials":
                # Written and deleted in bulk: a soft-delete window would bill every
                # deleted partial for another week.
                extra["soft_delete_policy"] = gcp.storage.BucketSoftDeletePolicyArgs(
                    retention_duration_seconds=0
                )
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
