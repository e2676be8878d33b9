"""Federated defect model for qledger: Flower ServerApp (OEM) / ClientApp (supplier).

Raw process data never leaves a supplier: each ClientApp reads only its own partition, the
ServerApp sees model updates (or, with SecAgg+, only their sum) and anchors every round's
global-model hash through the model registry beside the ledger.

Entry points (imported lazily so that the ClientApp process, which loads
``federated.client_app`` from the FAB, does not pay for the launcher's imports):

- :func:`federated.run.simulate`, :func:`federated.run.deploy_local` -> ``FLRunResult``
- :func:`federated.model.load_model`, :func:`federated.model.predict_defect_risk`
- :func:`federated.data.generate_partitions`
- ``federated.cli.app`` (mounted as ``qledger fl``)
"""

from __future__ import annotations
