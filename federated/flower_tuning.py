"""Flower 1.41 waits that were sized for slower processes than ours, shortened.

Each is a fixed delay inside Flower with no setting; each change is pinned by a unit test that
fails if the Flower code it relies on changes (tests/federated/test_fl_units.py).

Object pulls.

Flower moves a message in two steps: its header first, then its objects (arrays, records).
A receiver that sees the header before the objects are uploaded retries the pull with a backoff
that starts at 1 s (``flwr.supercore.constant.PULL_INITIAL_BACKOFF``), a delay sized for
receivers that are themselves slow to start. Ours are not: a ClientApp task forked from a warm
SuperExec asks for its message within milliseconds, and the ServerApp pulls replies every 50 ms,
so both kept landing in that 1 s wait (measured: one or two per round in the deployment engine,
about 1.1 s each). Flower's pull functions take the backoff as keyword arguments; this wraps the
one a module calls so that, unless the caller says otherwise, retries start at 20 ms and double
up to 1 s. The overall limit (``PULL_MAX_TIME``) is Flower's own.

Simulation dispatch: see :func:`shorten_simulation_dispatch`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

PULL_INITIAL_BACKOFF = 0.02
PULL_BACKOFF_CAP = 1.0
_MARK = "_qledger_short_backoff"


def _with_short_backoff(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def pull(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", PULL_INITIAL_BACKOFF)
        kwargs.setdefault("backoff_cap", PULL_BACKOFF_CAP)
        return fn(*args, **kwargs)

    setattr(pull, _MARK, True)
    return pull


def shorten_pull_backoff(module: ModuleType, name: str) -> None:
    """Make ``module.name`` (a Flower pull function it imported) retry sooner; idempotent."""
    fn = getattr(module, name)
    if not getattr(fn, _MARK, False):
        setattr(module, name, _with_short_backoff(fn))


# How often the simulation engine looks for new messages to hand to its workers. Flower 1.41
# looks every 0.1 s (``vce_api.add_messages_to_queue``): each message round waited ~0.05 s on
# average for it, four times in a SecAgg+ round (measured: an 8-supplier SecAgg+ round went
# from 0.60 s to 0.36 s at 5 ms). A look at the in-memory link state; cheap at this rate.
SIMULATION_DISPATCH_TICK = 0.005


def _add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
    """Flower 1.41's ``add_messages_to_queue``, looking every ``SIMULATION_DISPATCH_TICK``."""
    while not f_stop.is_set():
        for node_id in nodes_mapping:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        f_stop.wait(SIMULATION_DISPATCH_TICK)


def shorten_simulation_dispatch() -> None:
    """Make the simulation engine (started in this process) dispatch messages sooner."""
    import flwr.server.superlink.fleet.vce.vce_api as vce_api

    vce_api.add_messages_to_queue = _add_messages_to_queue
