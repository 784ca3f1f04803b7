"""The whole of Francine: the components, in the order their dependencies require.

ProjectApis ─▶ ServiceAccounts, StorageBuckets, ArtifactRegistry, FirestoreDb, Topics
            ─▶ AccessPolicy (grants on the project, buckets, topics, registry)
            ─▶ wait: iam-propagation
            ─▶ RenderService, Functions (api, reducer, watchdog) and their invoker grants
            ─▶ wait: invoker-propagation
            ─▶ PushSubscriptions (produce → renderer, events and dead letters → reducer),
               WatchdogSchedule (Cloud Scheduler → watchdog, every minute)

IAM grants are eventually consistent: "typically 2 minutes, potentially 7 minutes or
longer" (cloud.google.com/iam/docs/access-change-propagation). A function build started
seconds after its builder's grants fails with a permission error, and a push
subscription's first deliveries are refused until its invoker grant has spread. The
waits (``iamPropagationSeconds``, 180 s by default) make the first ``pulumi up`` on an
empty project go through; they run again only when the grants they cover change.
"""

from __future__ import annotations

import hashlib

import pulumi
import pulumi_gcp as gcp
import pulumiverse_time

from francine.base.config import ENV
from francine.domain import topology
from francine_infra.accounts import ServiceAccounts, ServiceAccountsArgs
from francine_infra.apis import ProjectApis, ProjectApisArgs
from francine_infra.config import FrancineConfig, memory_mib
from francine_infra.firestore import FirestoreDb, FirestoreDbArgs
from francine_infra.functions import Functions, FunctionsArgs, FunctionSpec
from francine_infra.iam import (
    POLICY,
    SCALER_PERMISSIONS,
    AccessPolicy,
    AccessPolicyArgs,
    scalers,
)
from francine_infra.messaging import (
    PushRoute,
    PushSubscriptions,
    PushSubscriptionsArgs,
    Topics,
    TopicsArgs,
    agent_token_creator,
    pubsub_agent,
)
from francine_infra.registry import ArtifactRegistry, ArtifactRegistryArgs
from francine_infra.render_service import RenderService, RenderServiceArgs
from francine_infra.schedule import WatchdogSchedule, WatchdogScheduleArgs
from francine_infra.storage import StorageBuckets, StorageBucketsArgs

RENDER_IMAGE_NAME = "renderer"
#: The watchdog's request timeout and Cloud Scheduler's attempt deadline: a sweep reads
#: a few documents per active execution.
WATCHDOG_TIMEOUT_SECONDS = 180


def runtime_environment(
    cfg: FrancineConfig, buckets: StorageBuckets, topics: Topics, database: FirestoreDb
) -> dict[str, pulumi.Input[str]]:
    """The environment every component reads, by the names ``francine.base.config``
    defines for its settings."""
    return {
        "GOOGLE_CLOUD_PROJECT": cfg.project,
        ENV["resources_bucket"]: buckets.name("resources"),
        ENV["partials_bucket"]: buckets.name("partials"),
        ENV["results_bucket"]: buckets.name("results"),
        ENV["produce_topic"]: topics["produce"].name,
        ENV["events_topic"]: topics["events"].name,
        ENV["status_topic"]: topics["execution-events"].name,
        ENV["database"]: database.name,
        ENV["max_task_s"]: str(cfg.max_task_s),
        ENV["admission_limit"]: str(cfg.admission_limit),
        # The planner refuses images that the reducer could not hold.
        ENV["reducer_memory_bytes"]: str(memory_mib(cfg.reducer_memory) << 20),
        ENV["render_cpu"]: cfg.render_cpu,
        ENV["render_memory_bytes"]: str(memory_mib(cfg.render_memory) << 20),
        ENV["reducer_cpu"]: cfg.reducer_cpu,
        # Warm-up (shared/francine/services/warmup.py): large executions raise the render
        # service's minimum instances, up to its maximum.
        ENV["render_service"]: f"projects/{cfg.project}/locations/{cfg.region}/services/"
        f"{render_service_name(cfg)}",
        ENV["max_render_instances"]: str(cfg.max_render_instances),
        ENV["farm_slots"]: str(cfg.farm_slots),
    }


def render_service_name(cfg: FrancineConfig) -> str:
    return f"{cfg.name_prefix}-renderer"


#: The largest HTTP/1 request body Cloud Run (and so a 2nd gen function) accepts, with
#: room for the request line and headers.
CLOUD_RUN_MAX_REQUEST_BYTES = (32 << 20) - (64 << 10)


def topic_path(project: str, topic: gcp.pubsub.Topic) -> pulumi.Output[str]:
    """``/projects/<p>/topics/<t>``: pushed to this path, functions-framework names the
    topic in the CloudEvent's ``source``, so the reducer tells events from dead letters."""
    return pulumi.Output.concat("/projects/", project, "/topics/", topic.name)


def propagation_wait(
    name: str, seconds: int, covers: list[str], depends_on: list[pulumi.Resource]
) -> list[pulumi.Resource]:
    """A wait of ``seconds`` after ``depends_on`` (the grants), for what uses them to
    depend on; ``covers`` names the grants, so that a changed set waits again."""
    if seconds <= 0:
        return depends_on
    digest = hashlib.sha256("\n".join(sorted(covers)).encode()).hexdigest()[:16]
    return [
        pulumiverse_time.Sleep(
            name,
            create_duration=f"{seconds}s",
            triggers={"grants": digest},
            opts=pulumi.ResourceOptions(depends_on=depends_on),
        )
    ]


def build_stack(cfg: FrancineConfig) -> dict[str, pulumi.Input]:
    """Declare every resource of the stack; returns the outputs to export."""
    apis = ProjectApis("apis", ProjectApisArgs(project=cfg.project))
    after_apis = pulumi.ResourceOptions(depends_on=[apis])

    accounts = ServiceAccounts(
        "accounts",
        ServiceAccountsArgs(project=cfg.project, name_prefix=cfg.name_prefix),
        after_apis,
    )
    buckets = StorageBuckets(
        "buckets",
        StorageBucketsArgs(
            project=cfg.project,
            location=cfg.bucket_location,
            name_prefix=cfg.bucket_prefix,
            partials_retention_days=cfg.partials_retention_days,
            results_retention_days=cfg.results_retention_days,
            resources_retention_days=cfg.resources_retention_days,
            sources_retention_days=cfg.sources_retention_days,
            force_destroy=cfg.force_destroy,
            soft_delete_days=cfg.soft_delete_days,
            results_cors_origins=cfg.results_cors_origins,
        ),
        after_apis,
    )
    registry = ArtifactRegistry(
        "registry",
        ArtifactRegistryArgs(
            project=cfg.project,
            location=cfg.region,
            repository_id=cfg.name_prefix,
            keep=cfg.images_to_keep,
            delete_after_days=cfg.image_retention_days,
        ),
        after_apis,
    )
    database = FirestoreDb(
        "firestore",
        FirestoreDbArgs(
            project=cfg.project, location=cfg.firestore_location, database=cfg.firestore_database
        ),
        after_apis,
    )
    topics = Topics(
        "topics", TopicsArgs(project=cfg.project, name_prefix=cfg.name_prefix), after_apis
    )
    access = AccessPolicy(
        "access",
        AccessPolicyArgs(
            project=cfg.project,
            accounts=accounts,
            buckets=buckets,
            topics=topics,
            registry=registry,
            name_prefix=cfg.name_prefix,
        ),
        after_apis,
    )

    agent = pubsub_agent("pubsub-agent", cfg.project, after_apis)
    token_creator = agent_token_creator(
        "access-agent-token-creator",
        agent.member,
        accounts.accounts["pusher"].name,
        after_apis,
    )
    # Deploy code only once its accounts may do their work (and the builder may build),
    # everywhere: after the grants have had time to propagate.
    granted = propagation_wait(
        "iam-propagation",
        cfg.iam_propagation_seconds,
        [f"{account}:{g.role}:{g.scope}" for account, gs in POLICY.items() for g in gs]
        + ["pubsub-agent:roles/iam.serviceAccountTokenCreator"]
        + [f"{key}:render-scaler:{','.join(SCALER_PERMISSIONS)}" for key in scalers()],
        [apis, access, token_creator],
    )
    after_access = pulumi.ResourceOptions(depends_on=[apis, access, database, *granted])
    environment = runtime_environment(cfg, buckets, topics, database)
    pusher = accounts.member("pusher")

    render: RenderService | None = None
    if cfg.image:
        render = RenderService(
            "renderer",
            RenderServiceArgs(
                project=cfg.project,
                region=cfg.region,
                name=render_service_name(cfg),
                image=cfg.image,
                service_account_email=accounts.email("renderer"),
                environment=environment,
                max_instances=cfg.max_render_instances,
                cpu=cfg.render_cpu,
                memory=cfg.render_memory,
                timeout_seconds=cfg.request_timeout_seconds,
                execution_environment=cfg.execution_environment_value,
                invokers=[pusher],
                # Warm-up: the watchdog alone sets the minimum instances (who may update
                # the service may deploy to it: never a process that answers the public
                # or takes pushes).
                scalers=[accounts.member(key) for key in scalers()],
                scaler_role=access.scaler_role.name,
            ),
            after_access,
        )
    else:
        pulumi.log.warn(
            "francine:image is not set: the render service and its subscription are not "
            "created. Build the image (infra/README.md), set francine:image, run pulumi up."
        )

    functions = Functions(
        "functions",
        FunctionsArgs(
            project=cfg.project,
            region=cfg.region,
            name_prefix=cfg.name_prefix,
            runtime=cfg.functions_runtime,
            repo_root=cfg.repo_root,
            sources_bucket=buckets.name("sources"),
            build_service_account=accounts.accounts["builder"].name,
            docker_repository=registry.repository.id,
            specs=[
                FunctionSpec(
                    key="api",
                    entry_point="api",
                    service_account_email=accounts.email("api"),
                    environment={
                        **environment,
                        ENV["block_timeout_s"]: str(cfg.block_timeout_seconds),
                        # Cloud Run refuses HTTP/1 request bodies over 32 MiB with a page
                        # of its own: answer our 413 first. Larger files are attached by
                        # gs:// URL (FRANCINE_MAX_RESOURCE_BYTES, 512 MiB).
                        ENV["max_upload_bytes"]: str(CLOUD_RUN_MAX_REQUEST_BYTES),
                    },
                    memory=cfg.api_memory,
                    cpu="1",
                    timeout_seconds=cfg.api_timeout_seconds,
                    max_instances=cfg.api_max_instances,
                    concurrency=cfg.api_concurrency,
                    # Public unless an organisation policy forbids allUsers (README).
                    public=cfg.public_api,
                    invokers=list(cfg.api_invokers),
                ),
                FunctionSpec(
                    key="reducer",
                    entry_point="reducer",
                    service_account_email=accounts.email("reducer"),
                    environment=environment,
                    memory=cfg.reducer_memory,
                    cpu=cfg.reducer_cpu,
                    timeout_seconds=cfg.request_timeout_seconds,
                    max_instances=cfg.reducer_max_instances,
                    # Reductions are CPU-bound like renders.
                    concurrency=1,
                    invokers=[pusher],
                ),
                FunctionSpec(
                    key="watchdog",
                    entry_point="watchdog",
                    service_account_email=accounts.email("watchdog"),
                    environment={
                        **environment,
                        ENV["stall_s"]: str(cfg.stall_s),
                    },
                    # It may advance a render in waves (its sum, the next wave's
                    # image): the reducer's memory, whose bound the planner applies.
                    memory=cfg.reducer_memory,
                    cpu="1",
                    timeout_seconds=WATCHDOG_TIMEOUT_SECONDS,
                    max_instances=1,
                    concurrency=1,
                    invokers=[accounts.member("scheduler")],
                ),
            ],
        ),
        after_access,
    )

    reducer_uri = functions.service_uris["reducer"]
    routes: list[PushRoute] = []
    for route in topology.ROUTES:
        if route.endpoint == topology.RENDERER:
            if render is None:
                continue  # the second pass, once the image exists
            endpoint, audience = pulumi.Output.concat(render.uri, "/"), render.uri
        else:
            endpoint = pulumi.Output.concat(
                reducer_uri, topic_path(cfg.project, topics[route.topic])
            )
            audience = reducer_uri
        routes.append(
            PushRoute(
                key=route.key,
                topic=route.topic,
                endpoint=endpoint,
                audience=audience,
                dead_letter=route.dead_letter,
                ack_deadline_seconds=cfg.ack_deadline_seconds,
            )
        )

    # The pushes are accepted only once the invoker grants (made with the services)
    # have propagated.
    services: list[pulumi.Resource] = [functions] + ([render] if render else [])
    invokable = propagation_wait(
        "invoker-propagation",
        cfg.iam_propagation_seconds,
        ["pusher:roles/run.invoker:" + r.endpoint for r in topology.ROUTES]
        + ["scheduler:roles/run.invoker:watchdog", "render" if render else "no-render"],
        [apis, *services],
    )
    subscriptions = PushSubscriptions(
        "push",
        PushSubscriptionsArgs(
            project=cfg.project,
            agent_member=agent.member,
            name_prefix=cfg.name_prefix,
            topics=topics,
            routes=routes,
            push_service_account_email=accounts.email("pusher"),
            max_delivery_attempts=cfg.max_delivery_attempts,
        ),
        pulumi.ResourceOptions(depends_on=[apis, *services, *invokable]),
    )

    watchdog_uri = functions.service_uris["watchdog"]
    WatchdogSchedule(
        "watchdog-schedule",
        WatchdogScheduleArgs(
            project=cfg.project,
            region=cfg.region,
            name_prefix=cfg.name_prefix,
            uri=watchdog_uri,
            service_account_email=accounts.email("scheduler"),
            schedule=cfg.watchdog_schedule,
            attempt_deadline_seconds=WATCHDOG_TIMEOUT_SECONDS,
        ),
        pulumi.ResourceOptions(depends_on=[apis, functions, *invokable]),
    )

    return {
        # The run.app URI: its paths reach the api unchanged (/, /health, /v1/...).
        "apiUrl": functions.service_uris["api"],
        "apiFunctionUrl": functions.urls["api"],
        "reducerUrl": reducer_uri,
        "watchdogUrl": watchdog_uri,
        "renderServiceUrl": render.uri if render else None,
        "renderImage": cfg.image,
        "imageRepository": registry.image_base,
        "suggestedRenderImage": pulumi.Output.concat(registry.image_base, "/", RENDER_IMAGE_NAME),
        "resourcesBucket": buckets.name("resources"),
        "partialsBucket": buckets.name("partials"),
        "resultsBucket": buckets.name("results"),
        "sourcesBucket": buckets.name("sources"),
        "produceTopic": topics["produce"].name,
        "eventsTopic": topics["events"].name,
        "firestoreDatabase": database.name,
        "builderServiceAccount": accounts.email("builder"),
        "serviceAccounts": {key: account.email for key, account in accounts.accounts.items()},
        "subscriptions": {key: sub.name for key, sub in subscriptions.subscriptions.items()},
        "ackDeadlineSeconds": cfg.ack_deadline_seconds,
        "requestTimeoutSeconds": cfg.request_timeout_seconds,
        "admissionLimit": cfg.admission_limit,
    }
