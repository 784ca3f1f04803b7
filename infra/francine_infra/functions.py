"""The api and the reducer as Cloud Functions (2nd gen), built from ``functions/``.

Both are HTTP-triggered. The api is public (it authenticates API keys itself). The
reducer has no Eventarc trigger: our own push subscriptions call it with an OIDC token,
which gives us the retry and dead-letter policies (an Eventarc trigger owns its
subscription). functions-framework turns the raw push envelope into a CloudEvent, as
long as ``reducer`` is registered with ``@functions_framework.cloud_event`` (for an
HTTP-triggered function the platform sets ``FUNCTION_SIGNATURE_TYPE=http``, which the
decorator overrides).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from francine_infra.archives import function_source
from francine_infra.options import child_options


@dataclass
class FunctionSpec:
    """One function: ``functions/<key>/main.py`` with entry point ``entry_point``."""

    key: str
    entry_point: str
    service_account_email: pulumi.Input[str]
    environment: dict[str, pulumi.Input[str]]
    memory: str
    cpu: str
    timeout_seconds: int
    max_instances: int
    concurrency: int
    public: bool = False
    # Members granted roles/run.invoker (e.g. the push account).
    invokers: list[pulumi.Input[str]] = field(default_factory=list)


@dataclass
class FunctionsArgs:
    project: str
    region: str
    name_prefix: str
    runtime: str
    repo_root: Path
    sources_bucket: pulumi.Input[str]
    # projects/<project>/serviceAccounts/<email> of the account that builds them.
    build_service_account: pulumi.Input[str]
    # projects/<project>/locations/<region>/repositories/<id> that receives the images.
    docker_repository: pulumi.Input[str]
    specs: list[FunctionSpec]


class Functions(pulumi.ComponentResource):
    """``functions[key]``, ``urls[key]`` (the function URL) and ``service_uris[key]``
    (the run.app URI of the underlying Cloud Run service: the push endpoint and the
    OIDC audience)."""

    def __init__(self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("francine:infra:Functions", name, None, opts)
        child = child_options(self, opts)
        self.functions: dict[str, gcp.cloudfunctionsv2.Function] = {}
        self.archives: dict[str, gcp.storage.BucketObject] = {}
        self.urls: dict[str, pulumi.Output[str]] = {}
        self.service_uris: dict[str, pulumi.Output[str]] = {}

        for spec in args.specs:
            source = function_source(args.repo_root, spec.key)
            archive = gcp.storage.BucketObject(
                f"{name}-{spec.key}-source",
                bucket=args.sources_bucket,
                name=source.object_name,
                source=source.asset_archive(),
                content_type="application/zip",
                opts=child,
            )
            function = gcp.cloudfunctionsv2.Function(
                f"{name}-{spec.key}",
                project=args.project,
                location=args.region,
                name=f"{args.name_prefix}-{spec.key}",
                description=f"Francine {spec.key}",
                build_config=gcp.cloudfunctionsv2.FunctionBuildConfigArgs(
                    runtime=args.runtime,
                    entry_point=spec.entry_point,
                    service_account=args.build_service_account,
                    docker_repository=args.docker_repository,
                    source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                        storage_source=gcp.cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                            bucket=archive.bucket,
                            object=archive.name,
                        )
                    ),
                ),
                service_config=gcp.cloudfunctionsv2.FunctionServiceConfigArgs(
                    service_account_email=spec.service_account_email,
                    available_memory=spec.memory,
                    available_cpu=spec.cpu,
                    timeout_seconds=spec.timeout_seconds,
                    min_instance_count=0,
                    max_instance_count=spec.max_instances,
                    max_instance_request_concurrency=spec.concurrency,
                    # functions-framework serves with `THREADS` gunicorn threads.
                    environment_variables={**spec.environment, "THREADS": str(spec.concurrency)},
                    ingress_settings="ALLOW_ALL",
                    all_traffic_on_latest_revision=True,
                ),
                labels={"francine-component": spec.key},
                opts=child,
            )
            # A 2nd gen function is served by a Cloud Run service of the same name;
            # invoking it takes roles/run.invoker on that service.
            members = (["allUsers"] if spec.public else []) + list(spec.invokers)
            for index, member in enumerate(members):
                gcp.cloudrunv2.ServiceIamMember(
                    f"{name}-{spec.key}-invoker-{'public' if member == 'allUsers' else index}",
                    project=args.project,
                    location=args.region,
                    name=function.name,
                    role="roles/run.invoker",
                    member=member,
                    opts=child,
                )
            self.functions[spec.key] = function
            self.archives[spec.key] = archive
            self.urls[spec.key] = function.url
            self.service_uris[spec.key] = function.service_config.apply(
                lambda config: config.uri if config else None
            )
        self.register_outputs({key: url for key, url in self.urls.items()})
