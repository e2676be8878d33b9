"""Shorter object-pull retries for Flower 1.41 processes that are ready sooner than it expects.

Flower moves a message in two steps: its header first, then its objects (arrays, records).
A receiver that sees the header before the objects are uploaded retries the pull with a backoff
that starts at 1 s (``flwr.supercore.constant.PULL_INITIAL_BACKOFF``), a delay sized for
receivers that are themselves slow to start. Ours are not: a ClientApp task forked from a warm
SuperExec asks for its message within milliseconds, and the ServerApp pulls replies every 50 ms,
so both kept landing in that 1 s wait (measured: one or two per round in the deployment engine,
about 1.1 s each). Flower's pull functions take the backoff as keyword arguments; this wraps the
one a module calls so that, unless the caller says otherwise, retries start at 20 ms and double
up to 1 s. The overall limit (``PULL_MAX_TIME``) is Flower's own.
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
