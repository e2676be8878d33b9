"""Flower 1.41 waits that were sized for slower processes than ours, shortened.

Each is a fixed delay inside Flower with no setting. The replacements are installed by
:mod:`federated.flower_compat`, which guards them by Flower version and pins the Flower code they
rely on.

The retry backoff of object pulls is shortened by
:func:`federated.flower_compat.patch_pull_backoff`.

Simulation dispatch: see :func:`shorten_simulation_dispatch`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from queue import Empty
from typing import Any

from federated.flower_compat import patch_simulation_dispatch

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
    """Make the simulation engine (started in this process) hand messages on without ticks.

    On a Flower version these loops were not verified against, Flower's own ticking loops stay
    and the ServerApp keeps polling (see federated.flower_compat).
    """
    global _simulation_wakeups
    if patch_simulation_dispatch(_add_messages_to_queue, _put_message_into_state):
        _simulation_wakeups = SimulationWakeups(MESSAGES_PUSHED, REPLIES_STORED)
