"""The domain, pure: records, the planner, the scheduler's state machine, the fair-share
dispatch policy, reductions, images, the message envelope and the topology, and what a
producer is (``producer``). No I/O, no SDK, no clock: functions of their arguments.
May import ``francine.base`` only."""
