"""The credit tests' signed population, for the check that notifications move no score."""

from tests.credit.conftest import fl, population, signed_population

__all__ = ["fl", "population", "signed_population"]
