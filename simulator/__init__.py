"""Synthetic supplier populations: hidden quality, the signed evidence it produces, and outcomes.

Used to train and test the credit model (``credit``), to give each federated supplier its
process data (``federated``), and by the demo. It signs real records with real keys, so what it
produces goes through the same verification and scoring as production evidence. The model is in
:mod:`simulator.population`.
"""
