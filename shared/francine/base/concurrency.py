"""Downloads that overlap without piling up in memory."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor


def fetched_in_order(get: Callable[[str], bytes], nodes: list[str],
                     window: int = 2) -> Iterator[bytes]:
    """The bytes of each node, in order, with at most ``window`` of them downloaded or
    downloading at any time (the one being used counts): the next download starts
    only when the caller is done with one."""
    with ThreadPoolExecutor(max_workers=max(1, window)) as pool:
        todo = iter(nodes)
        pending: deque = deque(pool.submit(get, n) for n in itertools.islice(todo, window))
        while pending:
            data = pending.popleft().result()
            yield data
            del data
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(get, nxt))
