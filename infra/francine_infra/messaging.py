"""Pub/Sub: the topics of the pipeline and the push subscriptions that drive it.

The topology (topics, routes, dead letters, retry policy) is ``francine.domain.topology``, the
same table that ``francine stack up`` builds locally; this module only turns it into
resources. Every push subscription authenticates with an OIDC token of the ``pusher``
account, waits ``ack_deadline_seconds`` for an answer (the endpoint's timeout plus a
margin), backs off between retries and dead-letters a message after
``max_delivery_attempts``. The reducer receives the dead letters of both stages and
marks the task and its execution failed; what even the reducer cannot handle ends in
``unprocessable`` for a person to inspect, instead of circling forever.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from francine.domain import topology
from francine_infra.options import child_options

TOPICS = topology.TOPICS
RETRY_MINIMUM_BACKOFF = f"{topology.CLOUD_RETRY.min_backoff_s}s"
RETRY_MAXIMUM_BACKOFF = f"{topology.CLOUD_RETRY.max_backoff_s}s"
UNPROCESSABLE_RETENTION = f"{topology.HOLD.retention_s}s"


@dataclass
class TopicsArgs:
    project: str
    name_prefix: str


class Topics(pulumi.ComponentResource):
    """``topics[key]`` for each key of ``TOPICS``, named ``<prefix>-<key>``."""

    def __init__(self, name: str, args: TopicsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("francine:infra:Topics", name, None, opts)
        self.topics: dict[str, gcp.pubsub.Topic] = {
            key: gcp.pubsub.Topic(
                f"{name}-{key}",
                project=args.project,
                name=topology.name(args.name_prefix, key),
                labels={"francine-topic": key},
                opts=child_options(self, opts),
            )
            for key in TOPICS
        }
        self.register_outputs({key: topic.name for key, topic in self.topics.items()})

    def __getitem__(self, key: str) -> gcp.pubsub.Topic:
        return self.topics[key]


@dataclass
class PushRoute:
    """One push subscription: from ``topic`` to ``endpoint``, dead letters to ``dead_letter``."""

    key: str
    topic: str
    endpoint: pulumi.Input[str]
    audience: pulumi.Input[str]
    dead_letter: str
    ack_deadline_seconds: int


@dataclass
class PushSubscriptionsArgs:
    project: str
    # The Pub/Sub service agent's member (``pubsub_agent(...).member``).
    agent_member: pulumi.Input[str]
    name_prefix: str
    topics: Topics
    routes: list[PushRoute]
    # The account whose OIDC token authenticates the pushes (it holds run.invoker).
    push_service_account_email: pulumi.Input[str]
    max_delivery_attempts: int


def pubsub_agent(
    name: str, project: str, opts: pulumi.ResourceOptions
) -> gcp.projects.ServiceIdentity:
    """The Pub/Sub service agent, which mints the pushes' OIDC tokens and moves messages
    to dead-letter topics. Google creates it some time after the API is enabled, and a
    grant to an agent that does not exist yet fails: on a new project the first
    ``pulumi up`` would stop at the dead-lettering grants. Asking for its identity
    creates it now; every grant to it takes its ``member`` (so comes after)."""
    return gcp.projects.ServiceIdentity(
        name, project=project, service="pubsub.googleapis.com", opts=opts
    )


def agent_token_creator(
    name: str,
    agent_member: pulumi.Input[str],
    push_service_account_name: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> gcp.serviceaccount.IAMMember:
    """The agent mints the OIDC tokens of the pushes. Projects created since April 2021
    let it do so by default; older ones need this grant (on the push account only).
    ``push_service_account_name``: projects/<p>/serviceAccounts/<email>."""
    return gcp.serviceaccount.IAMMember(
        name,
        service_account_id=push_service_account_name,
        role="roles/iam.serviceAccountTokenCreator",
        member=agent_member,
        opts=opts,
    )


class PushSubscriptions(pulumi.ComponentResource):
    """The push subscriptions of ``routes``, the dead-letter sink and the agent's
    dead-lettering grants."""

    def __init__(
        self, name: str, args: PushSubscriptionsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("francine:infra:PushSubscriptions", name, None, opts)
        child = child_options(self, opts)
        topics = args.topics
        agent = args.agent_member

        self.subscriptions: dict[str, gcp.pubsub.Subscription] = {}
        for route in args.routes:
            subscription = gcp.pubsub.Subscription(
                f"{name}-{route.key}",
                project=args.project,
                name=topology.name(args.name_prefix, route.key),
                topic=topics[route.topic].id,
                ack_deadline_seconds=route.ack_deadline_seconds,
                push_config=gcp.pubsub.SubscriptionPushConfigArgs(
                    push_endpoint=route.endpoint,
                    oidc_token=gcp.pubsub.SubscriptionPushConfigOidcTokenArgs(
                        service_account_email=args.push_service_account_email,
                        audience=route.audience,
                    ),
                ),
                retry_policy=gcp.pubsub.SubscriptionRetryPolicyArgs(
                    minimum_backoff=RETRY_MINIMUM_BACKOFF,
                    maximum_backoff=RETRY_MAXIMUM_BACKOFF,
                ),
                dead_letter_policy=gcp.pubsub.SubscriptionDeadLetterPolicyArgs(
                    dead_letter_topic=topics[route.dead_letter].id,
                    max_delivery_attempts=args.max_delivery_attempts,
                ),
                # The default expires a subscription after 31 idle days: a render farm
                # that nobody used for a month would silently stop working.
                expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
                labels={"francine-route": route.key},
                opts=child,
            )
            self.subscriptions[route.key] = subscription
            # Dead-lettering: the agent acknowledges the message here ...
            gcp.pubsub.SubscriptionIAMMember(
                f"{name}-{route.key}-agent-subscriber",
                project=args.project,
                subscription=subscription.name,
                role="roles/pubsub.subscriber",
                member=agent,
                opts=child,
            )

        # ... and publishes it to the dead-letter topic.
        for key in sorted({route.dead_letter for route in args.routes}):
            gcp.pubsub.TopicIAMMember(
                f"{name}-{key}-agent-publisher",
                project=args.project,
                topic=topics[key].name,
                role="roles/pubsub.publisher",
                member=agent,
                opts=child,
            )

        hold = topology.HOLD
        self.unprocessable = gcp.pubsub.Subscription(
            f"{name}-{hold.key}",
            project=args.project,
            name=topology.name(args.name_prefix, hold.key),
            topic=topics[hold.topic].id,
            message_retention_duration=UNPROCESSABLE_RETENTION,
            expiration_policy=gcp.pubsub.SubscriptionExpirationPolicyArgs(ttl=""),
            labels={"francine-route": hold.key},
            opts=child,
        )
        self.register_outputs(
            {key: sub.name for key, sub in self.subscriptions.items()}
            | {"unprocessable": self.unprocessable.name}
        )
