"""``flower-supernode`` with a configurable idle poll (run as a script by federated.deploy).

Flower 1.41's SuperNode main loop sleeps a hard-coded 3 s whenever a pull finds no message, and
0.5 s while it waits for the ClientApp's reply. In a federated round the next message almost
always arrives just after the node went to sleep, so each message to a SuperNode waits ~1.5 s on
average and up to 3 s (twice per SecAgg+ round with keys set up ahead, four times with
``secagg_keys_ahead=False``, which keeps Flower's four stages). There is no setting for it;
this wrapper swaps (through :mod:`federated.flower_compat`) the ``time`` module *seen by that
one Flower module* for one whose ``sleep``
maps those two waits to ``QLEDGER_SUPERNODE_POLL`` / ``QLEDGER_SUPERNODE_REPLY_POLL`` seconds
and leaves every other sleep alone. Everything else is the stock ``flower-supernode`` entry point.

Set ``QLEDGER_SUPERNODE_POLL=3`` to get Flower's own behaviour back.

The node also pulls each message's objects from the SuperLink right after the message itself,
often before the ServerApp has finished uploading them; that pull retries with Flower's 1 s
first backoff, which :func:`federated.flower_compat.patch_pull_backoff` shortens here as in
the other processes.
It is run by file path (see federated.deploy).
"""

from __future__ import annotations

import os

import flwr.supernode.start_client_internal as _loop
from flwr.supernode.cli.flower_supernode import flower_supernode

from federated.flower_compat import patch_pull_backoff, patch_supernode_sleeps

_IDLE = float(os.environ.get("QLEDGER_SUPERNODE_POLL", "3"))
_REPLY = float(os.environ.get("QLEDGER_SUPERNODE_REPLY_POLL", "0.5"))

if __name__ == "__main__":
    # Flower 1.41's hard-coded waits, by value: 3 s idle, 0.5 s while waiting for a reply.
    patch_supernode_sleeps({3: _IDLE, 0.5: _REPLY})
    patch_pull_backoff(_loop, "pull_objects")
    flower_supernode()  # returns None: the process exits 0 when the SuperNode stops
