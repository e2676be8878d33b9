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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty
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


# The simulation engine runs the ServerApp, its dispatcher and its reply writer as threads of one
# process, handing messages along through the in-memory link state. Flower 1.41's dispatcher
# (``vce_api.add_messages_to_queue``) looks at that state every 0.1 s, and the ServerApp looks for
# replies on its own poll, so every message round (two in a SecAgg+ round with keys set up ahead,
# four with Flower's own stages) waited for two ticks besides its work (measured, 8 suppliers:
# 0.3-2.3 ms to dispatch and 5.5-7.8 ms to notice the last reply at a 5 ms / 10 ms tick).
# Instead, the ServerApp's grid sets ``MESSAGES_PUSHED`` after each push and the reply writer
# sets ``REPLIES_STORED`` after each store; each side waits on its event. The tick stays as a
# fallback: a wake-up that fires early costs one look at the state.
SIMULATION_DISPATCH_TICK = 0.05
MESSAGES_PUSHED = threading.Event()
REPLIES_STORED = threading.Event()


@dataclass(frozen=True)
class SimulationWakeups:
    """The two events the ServerApp's grid uses when it runs inside the simulation engine."""

    pushed: threading.Event
    replied: threading.Event


_simulation_wakeups: SimulationWakeups | None = None


def simulation_wakeups() -> SimulationWakeups | None:
    """The events, once :func:`shorten_simulation_dispatch` has installed their other ends."""
    return _simulation_wakeups


def _add_messages_to_queue(state: Any, queue: Any, nodes_mapping: Any, f_stop: Any) -> None:
    """Flower 1.41's ``add_messages_to_queue``, woken by ``MESSAGES_PUSHED``.

    It looks again at once after a look that found messages (Flower takes one per node per
    look), so a backlog never waits for the next wake-up.
    """
    while not f_stop.is_set():
        # Cleared before looking: a push that lands during the look sets it again.
        MESSAGES_PUSHED.clear()
        found = False
        for node_id in nodes_mapping:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
                found = True
        if not found:
            MESSAGES_PUSHED.wait(SIMULATION_DISPATCH_TICK)


def _put_message_into_state(state: Any, queue: Any, f_stop: Any) -> None:
    """Flower 1.41's ``put_message_into_state``, setting ``REPLIES_STORED`` after each store."""
    while not f_stop.is_set():
        try:
            reply = queue.get(timeout=1.0)
        except Empty:
            continue
        state.store_message_res(reply)
        REPLIES_STORED.set()


def shorten_simulation_dispatch() -> None:
    """Make the simulation engine (started in this process) hand messages on without ticks."""
    import flwr.server.superlink.fleet.vce.vce_api as vce_api

    global _simulation_wakeups
    vce_api.add_messages_to_queue = _add_messages_to_queue
    vce_api.put_message_into_state = _put_message_into_state
    _simulation_wakeups = SimulationWakeups(MESSAGES_PUSHED, REPLIES_STORED)
