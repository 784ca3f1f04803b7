"""The Google Cloud APIs that Francine needs, enabled in the project."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options

# Each one is used by a resource of this program (or by the builds it starts).
REQUIRED_APIS: tuple[str, ...] = (
    "artifactregistry.googleapis.com",  # the render image and the function images
    "cloudbuild.googleapis.com",  # builds the functions and the render image
    "cloudfunctions.googleapis.com",  # the api and the reducer (2nd gen)
    "cloudscheduler.googleapis.com",  # calls the watchdog every minute
    "cloudresourcemanager.googleapis.com",  # project IAM grants, the project number
    "firestore.googleapis.com",  # sessions, executions, tasks
    "iam.googleapis.com",  # the service accounts
    "iamcredentials.googleapis.com",  # OIDC tokens for Pub/Sub push
    "logging.googleapis.com",  # build and runtime logs
    "pubsub.googleapis.com",  # the task pipeline
    "run.googleapis.com",  # the render service; 2nd gen functions run on it too
    "storage.googleapis.com",  # resources, partial images, results, sources
)


@dataclass
class ProjectApisArgs:
    project: str
    apis: tuple[str, ...] = REQUIRED_APIS


class ProjectApis(pulumi.ComponentResource):
    """Enables the APIs; every other component depends on this one.

    ``pulumi destroy`` leaves the APIs enabled (``disable_on_destroy=False``): disabling
    an API that something else in the project uses would break it, and an enabled API
    with nothing in it costs nothing.
    """

    def __init__(
        self, name: str, args: ProjectApisArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:ProjectApis", name, None, opts)
        self.services: dict[str, gcp.projects.Service] = {
            api: gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project,
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=child_options(self, opts),
            )
            for api in args.apis
        }
        self.register_outputs({"apis": list(self.services)})
