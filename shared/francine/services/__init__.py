"""Application services: starting, viewing and ending executions, the farm's queue,
events and webhooks, quotas, users, uploads and resources, retention, estimates,
previews, recovery and warm-up. They work on ``francine.ports`` (handed an ``Adapters``
bundle), never on an adapter or a Google library. May import the producers, the ports,
the domain and the base."""
