"""The render service on Cloud Run: one task per request, scaled from zero to N.

The autoscaling policy (infra/autoscaling.md) is made of these settings:

- concurrency 1: rendering is CPU-bound, two requests on one instance would only
  share its CPUs and both miss their deadline;
- min 0 instances: nothing runs, nothing is billed, while nobody renders;
- max N instances (``maxRenderInstances``): the bound on parallel tasks, so on cost
  per second; Pub/Sub pushes beyond it are answered 429 and retried with backoff;
- CPU and memory per instance (``renderCpu``, ``renderMemory``), billed only while a
  request is being handled (``cpu_idle``: request-based billing);
- request timeout = ack deadline: a stuck render ends when Pub/Sub would redeliver it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

from francine_infra.options import child_options

CONTAINER_PORT = 8080


@dataclass
class RenderServiceArgs:
    project: str
    region: str
    name: str
    image: str
    service_account_email: pulumi.Input[str]
    environment: dict[str, pulumi.Input[str]]
    max_instances: int
    cpu: str
    memory: str
    timeout_seconds: int
    execution_environment: str  # EXECUTION_ENVIRONMENT_GEN1 or _GEN2
    # Members granted roles/run.invoker (the push account); nobody else may call it.
    invokers: list[pulumi.Input[str]] = field(default_factory=list)
    # Members that set the service-level minimum instances (francine.services.warmup):
    # ``scaler_role`` (run.services.get and .update: iam.SCALER_PERMISSIONS) on this
    # service only.
    scalers: list[pulumi.Input[str]] = field(default_factory=list)
    scaler_role: pulumi.Input[str] | None = None


class RenderService(pulumi.ComponentResource):
    def __init__(
        self, name: str, args: RenderServiceArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:RenderService", name, None, opts)
        child = child_options(self, opts)
        self.service = gcp.cloudrunv2.Service(
            name,
            project=args.project,
            location=args.region,
            name=args.name,
            description="Francine render service: one production task per request",
            # Pub/Sub pushes over the public endpoint; IAM (OIDC) keeps others out.
            ingress="INGRESS_TRAFFIC_ALL",
            # Otherwise `pulumi destroy` refuses to delete the service.
            deletion_protection=False,
            template=gcp.cloudrunv2.ServiceTemplateArgs(
                service_account=args.service_account_email,
                max_instance_request_concurrency=1,
                timeout=f"{args.timeout_seconds}s",
                execution_environment=args.execution_environment,
                scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                    min_instance_count=0,
                    max_instance_count=args.max_instances,
                ),
                containers=[
                    gcp.cloudrunv2.ServiceTemplateContainerArgs(
                        image=args.image,
                        ports=gcp.cloudrunv2.ServiceTemplateContainerPortsArgs(
                            container_port=CONTAINER_PORT
                        ),
                        resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                            limits={"cpu": args.cpu, "memory": args.memory},
                            # CPU only while a request is handled: request-based billing.
                            cpu_idle=True,
                            # More CPU during start-up: the numba cache loads faster.
                            startup_cpu_boost=True,
                        ),
                        envs=[
                            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=key, value=value)
                            for key, value in sorted(args.environment.items())
                        ],
                    )
                ],
            ),
            labels={"francine-component": "renderer"},
            # The service-level minimum instances belong to the warm-up at run time.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
                ignore_changes=["scaling"])),
        )
        if args.scalers and args.scaler_role is None:
            raise ValueError("scalers need the scaler role")
        grants: list[tuple[str, pulumi.Input[str], list[pulumi.Input[str]]]] = [
            ("invoker", "roles/run.invoker", args.invokers),
            ("scaler", args.scaler_role or "", args.scalers)]
        for what, role, members in grants:
            for index, member in enumerate(members):
                gcp.cloudrunv2.ServiceIamMember(
                    f"{name}-{what}-{index}",
                    project=args.project,
                    location=args.region,
                    name=self.service.name,
                    role=role,
                    member=member,
                    opts=child,
                )
        self.uri = self.service.uri
        self.register_outputs({"uri": self.uri})
