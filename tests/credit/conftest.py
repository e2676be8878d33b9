"""Shared fixtures for the credit tests: one signed population and the checked-in model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from credit.model import CreditModel, default_model
from simulator.population import Population, simulate_population


@pytest.fixture(scope="session")
def model() -> CreditModel:
    return default_model()


@pytest.fixture(scope="session")
def signed_population() -> Population:
    """12 suppliers over 9 months, every record signed with the orgs' keys and anchored."""
    return simulate_population(12, 9, seed=11)


@pytest.fixture
def population(signed_population: Population) -> Population:
    """A copy a test may add records to without affecting the others."""
    pop = signed_population
    return replace(pop, items=list(pop.items), records=list(pop.records), _nonces=dict(pop._nonces))


@pytest.fixture
def fl(signed_population: Population) -> Callable[[str], float]:
    pop = signed_population
    return lambda sid: pop.fl_participation(sid, pop.end, 180)
