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
            opts=child_options(self, opts),
        )
        self.image_base = pulumi.Output.concat(
            args.location, "-docker.pkg.dev/", args.project, "/", args.repository_id
        )
        self.register_outputs({"image_base": self.image_base})
