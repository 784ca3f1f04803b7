"""The Artifact Registry repository for the render image and the function images."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options


@dataclass
class ArtifactRegistryArgs:
    project: str
    location: str
    repository_id: str
    # Per image name (package): the newest `keep` versions stay; older versions are
    # deleted once they are `delete_after_days` old. Each function deploy and each
    # render image build adds versions, so without this the repository only grows.
    keep: int = 5
    delete_after_days: int = 7


class ArtifactRegistry(pulumi.ComponentResource):
    """A Docker repository; ``image_base`` is ``<location>-docker.pkg.dev/<project>/<id>``.

    The functions are built into it too (``docker_repository`` of their build), so the
    build account needs write access to this repository only, not to a
    ``gcf-artifacts`` repository that does not exist before the first deployment.
    """

    def __init__(
        self, name: str, args: ArtifactRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:ArtifactRegistry", name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            name,
            project=args.project,
            location=args.location,
            repository_id=args.repository_id,
            format="DOCKER",
            description="Francine: the render image and the function images",
            # Keep policies win over delete policies (Artifact Registry's rule).
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-newest",
                    action="KEEP",
                    most_recent_versions=(
                        gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                            keep_count=args.keep
                        )
                    ),
                ),
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-old",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="ANY",
                        older_than=f"{args.delete_after_days * 86400}s",
                    ),
                ),
            ],
            opts=child_options(self, opts),
        )
        self.image_base = pulumi.Output.concat(
            args.location, "-docker.pkg.dev/", args.project, "/", args.repository_id
        )
        self.register_outputs({"image_base": self.image_base})
