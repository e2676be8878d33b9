"""Federated defect model for qledger: Flower ServerApp (OEM) / ClientApp (supplier).

Raw process data never leaves a supplier: each ClientApp reads only its own partition, the
ServerApp sees model updates (or, with SecAgg+, only their sum) and anchors every round's
global-model hash through the model registry beside the ledger.

Entry points (imported lazily so that the ClientApp process, which loads
``federated.client_app`` from the FAB, does not pay for the launcher's imports):

- :func:`federated.run.simulate`, :func:`federated.run.deploy_local` -> ``FLRunResult``
- :func:`federated.model.load_model`, :func:`federated.model.predict_defect_risk`
- :func:`federated.data.generate_partitions`
- ``cli.fl.app`` (mounted as ``qledger fl``)
"""

from __future__ import annotations

import os
import sys
from typing import Any

# Flower sends a usage event to telemetry.flower.ai whenever a simulation, SuperLink or SuperNode
# starts (host platform, CPU count, a persistent machine id) unless FLWR_TELEMETRY_ENABLED=0, and
# Ray (the simulation engine) collects usage statistics for usage-stats.ray.io unless
# RAY_USAGE_STATS_ENABLED=0. An OEM's or supplier's machine should not report to third parties
# unless its operator opts in. Flower reads its variable when its telemetry module is imported,
# so both are set here, before any of our modules import Flower or start Ray, and Flower's is
# copied into its module if that was imported already.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if "flwr.supercore.telemetry" in sys.modules:
    # Any: the module's constant is assigned from outside, which its declared type forbids.
    flwr_telemetry: Any = sys.modules["flwr.supercore.telemetry"]
    flwr_telemetry.FLWR_TELEMETRY_ENABLED = os.environ["FLWR_TELEMETRY_ENABLED"]
