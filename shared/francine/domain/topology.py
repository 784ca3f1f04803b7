"""The pipeline's Pub/Sub topology, declared once: topics, push routes, retry and
dead-letter policies. ``francine stack up`` (``francine.tools.local.stack``) and the Pulumi
program (``infra/francine_infra/messaging.py``) both build what is written here.

    api ──▶ produce ──push──▶ renderer ──▶ events ──push──▶ reducer ──▶ events
    any service ──▶ execution-events ──push──▶ reducer (webhooks) ─▶ unprocessable
               │ (max attempts)                  │ (max attempts)
               ▼                                 ▼
     produce-dead-letter ──push──▶ reducer   events-dead-letter ──push──▶ reducer
               │ (max attempts)                  │ (max attempts)
               └────────────▶ unprocessable ◀────┘ (pull subscription, kept 7 days)

Names are ``<prefix>-<key>`` for topics and subscriptions alike. Who may publish to
which topic (the render service too publishes production tasks, a failed pass produced
again, and statuses) is ``francine.domain.rights``. Pure data, no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Topic key → its role.
TOPICS: dict[str, str] = {
    "produce": "production tasks, from any service (the scheduler's) to the render service",
    "events": "task-done events, from the render service and the reducer to the reducer",
    "produce-dead-letter": "production tasks that exhausted their delivery attempts",
    "events-dead-letter": "task events that exhausted their delivery attempts",
    "unprocessable": "dead letters that the reducer could not handle either",
    "execution-events": "execution status (created, ended) for other systems; the reducer "
                        "delivers notify_url webhooks from it",
}

#: The endpoints that push subscriptions deliver to.
RENDERER = "renderer"
REDUCER = "reducer"


@dataclass(frozen=True)
class Route:
    """A push subscription ``key`` from ``topic`` to ``endpoint``; what exhausts its
    delivery attempts goes to ``dead_letter``."""

    key: str
    topic: str
    endpoint: str
    dead_letter: str


ROUTES: tuple[Route, ...] = (
    Route("produce-render", "produce", RENDERER, "produce-dead-letter"),
    Route("events-reduce", "events", REDUCER, "events-dead-letter"),
    Route("produce-dead-letter-reduce", "produce-dead-letter", REDUCER, "unprocessable"),
    Route("events-dead-letter-reduce", "events-dead-letter", REDUCER, "unprocessable"),
    # Webhooks: final statuses pushed to the reducer, which delivers them (retried).
    Route("execution-events-notify", "execution-events", REDUCER, "unprocessable"),
)


@dataclass(frozen=True)
class Hold:
    """A pull subscription that keeps what nobody handled, for a person to inspect."""

    key: str
    topic: str
    retention_s: int


HOLD = Hold("unprocessable-hold", "unprocessable", 7 * 24 * 3600)


@dataclass(frozen=True)
class RetryPolicy:
    """Pub/Sub's exponential backoff between redeliveries, and the attempts before a
    message is dead-lettered (Pub/Sub accepts 5 to 100)."""

    min_backoff_s: int
    max_backoff_s: int
    max_delivery_attempts: int


#: The cloud's policy (Pub/Sub allows backoffs of 0–600 s).
CLOUD_RETRY = RetryPolicy(min_backoff_s=10, max_backoff_s=600, max_delivery_attempts=10)
#: The local stack's: short backoffs, so that failure tests finish in seconds.
LOCAL_RETRY = RetryPolicy(min_backoff_s=1, max_backoff_s=10, max_delivery_attempts=5)


def name(prefix: str, key: str) -> str:
    """The topic or subscription id of ``key`` in a deployment named ``prefix``."""
    return f"{prefix}-{key}"


def route(key: str) -> Route:
    (found,) = [r for r in ROUTES if r.key == key]
    return found


def check() -> None:
    """Every route reads and dead-letters to a declared topic; every dead-letter topic
    is itself drained (by a route or the hold), so nothing circles or is lost."""
    drained = {r.topic for r in ROUTES} | {HOLD.topic}
    for r in ROUTES:
        if r.topic not in TOPICS or r.dead_letter not in TOPICS:
            raise ValueError(f"route {r.key}: unknown topic")
        if r.dead_letter == r.topic:
            raise ValueError(f"route {r.key}: dead-letters to its own topic")
        if r.dead_letter not in drained:
            raise ValueError(f"route {r.key}: nothing reads {r.dead_letter}")
    if len({r.key for r in ROUTES} | {HOLD.key}) != len(ROUTES) + 1:
        raise ValueError("two subscriptions share a key")
