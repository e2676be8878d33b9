"""Every place qledger adapts Flower's internals, in one module: version-guarded and pinned.

Flower 1.41 has no setting for a few waits sized for slower processes than ours, its SecAgg+
mask generator folds each seed to 32 bits, and its SecAgg+ workflow cannot set up next round's
keys during this round. qledger changes those by replacing names inside Flower's modules and by
calling two private SecAgg+ functions. Such reach-ins break silently on an upgrade, so:

* every replacement is *applied* here and nowhere else (the modules that need one call a
  ``patch_*`` function below; the replacement code itself lives beside its explanation);
* each applies only on the Flower version it was verified against (:data:`FLWR_VERIFIED`). On
  any other version the speed adaptations leave Flower's own behaviour in place and warn once;
* each adaptation names the Flower code it relies on (:data:`ADAPTATIONS`), with a digest of that
  code's source. ``tests/federated/test_flower_compat.py`` recomputes the digests, so an upgrade
  that changes relied-on code fails a test naming the adaptation, before anything runs.

One adaptation does not fall back: the SecAgg+ primitives. Falling back would mean running
SecAgg+ with the 32-bit-seed masks that a server colluding with a supplier's neighbours can
brute-force (``secagg_primitives.py``); on an unverified Flower SecAgg+ refuses to start with
:class:`FlowerNotVerified` until the upgrade checklist in docs/federated.md has been worked
through and :data:`FLWR_VERIFIED` moved.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)

# The flwr release every adaptation below was read against and tested with (pyproject.toml pin).
FLWR_VERIFIED = "1.41.0"

# Flower's own module paths (looked up by name: ``flwr.client.mod.secure_aggregation`` re-exports
# a *function* called ``secaggplus_mod`` that shadows its submodule under attribute access).
SECAGG_CLIENT_MOD = "flwr.client.mod.secure_aggregation.secaggplus_mod"
SECAGG_SERVER_WORKFLOW = "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
VCE_API = "flwr.server.superlink.fleet.vce.vce_api"
SUPERNODE_LOOP = "flwr.supernode.start_client_internal"
SUPEREXEC_RUN = "flwr.supercore.superexec.run_superexec"


class FlowerNotVerified(RuntimeError):
    """The installed flwr is not the version a security-relevant adaptation was verified on."""

    def __init__(self, what: str, installed: str) -> None:
        super().__init__(
            f"{what} is verified against flwr {FLWR_VERIFIED}, but flwr {installed} is "
            "installed: work through the upgrade checklist in docs/federated.md first"
        )
        self.expected, self.got = FLWR_VERIFIED, installed


@dataclass(frozen=True)
class Adaptation:
    """One reach into Flower: what it changes, why, and the Flower code it relies on."""

    name: str
    changes: str
    why: str
    # "module:qualname" of each Flower object whose exact code the adaptation assumes; the
    # SHA-256 of each one's source as shipped in FLWR_VERIFIED is in PINNED_SOURCES.
    relies_on: tuple[str, ...]
    falls_back: bool = True


ADAPTATIONS: tuple[Adaptation, ...] = (
    Adaptation(
        name="pull-backoff",
        changes="the pull functions the SuperNode loop, the ClientApp runtime and the ServerApp's "
        "grid imported by name are wrapped to retry from 20 ms instead of 1 s",
        why="a receiver that asks before the objects are uploaded waited a full 1 s (measured: "
        "one or two per round, ~1.1 s each) although ours ask within milliseconds",
        relies_on=(
            "flwr.supercore.inflatable.inflatable_utils:pull_objects",
            "flwr.supercore.inflatable.inflatable_utils:pull_and_inflate_object_from_tree",
        ),
    ),
    Adaptation(
        name="simulation-dispatch",
        changes=f"{VCE_API}.add_messages_to_queue / put_message_into_state are replaced by "
        "versions woken by events (federated/flower_tuning.py)",
        why="the simulation engine's 0.1 s dispatcher tick cost every message round two ticks",
        relies_on=(
            f"{VCE_API}:add_messages_to_queue",
            f"{VCE_API}:put_message_into_state",
            f"{VCE_API}:start_vce",
        ),
    ),
    Adaptation(
        name="supernode-sleeps",
        changes=f"the `time` module seen by {SUPERNODE_LOOP} maps its hard-coded 3 s idle and "
        "0.5 s reply waits to QLEDGER_SUPERNODE_POLL / QLEDGER_SUPERNODE_REPLY_POLL",
        why="each message to a SuperNode waited ~1.5 s on average for the next poll",
        relies_on=(f"{SUPERNODE_LOOP}:start_client_internal",),
    ),
    Adaptation(
        name="superexec-executor",
        changes=f"{SUPEREXEC_RUN}.get_executor returns a forking ClientApp executor "
        "(federated/superexec_main.py)",
        why="a fresh interpreter per ClientApp message re-imported flwr and torch (~5 CPU-s)",
        relies_on=(
            f"{SUPEREXEC_RUN}:run_superexec",
            "flwr.supercore.superexec.executor.factory:get_executor",
        ),
    ),
    Adaptation(
        name="secagg-primitives",
        changes=f"{SECAGG_CLIENT_MOD} and {SECAGG_SERVER_WORKFLOW} use our pseudo_rand_gen "
        "(ChaCha20 over the whole seed), generate_key_pairs (P-256) and Shamir in integers",
        why="Flower's mask generator folds each 32-byte seed to 32 bits (brute-forceable)",
        relies_on=(
            f"{SECAGG_CLIENT_MOD}:_setup",
            f"{SECAGG_CLIENT_MOD}:_share_keys",
            f"{SECAGG_CLIENT_MOD}:_collect_masked_vectors",
            f"{SECAGG_CLIENT_MOD}:_unmask",
            f"{SECAGG_SERVER_WORKFLOW}:SecAggPlusWorkflow.collect_masked_vectors_stage",
            f"{SECAGG_SERVER_WORKFLOW}:SecAggPlusWorkflow.unmask_stage",
        ),
        falls_back=False,
    ),
    Adaptation(
        name="secagg-keys-ahead",
        changes="next round's SecAgg+ keys are set up during this round: the supplier calls "
        f"Flower's private {SECAGG_CLIENT_MOD}._setup/_share_keys and the server fills "
        "WorkflowState's fields for a prepared round (federated/secagg_ahead.py, secagg.py)",
        why="a SecAgg+ round is then two message rounds instead of four (1.76x plain FedAvg)",
        relies_on=(
            f"{SECAGG_CLIENT_MOD}:_setup",
            f"{SECAGG_CLIENT_MOD}:_share_keys",
            f"{SECAGG_SERVER_WORKFLOW}:WorkflowState",
            f"{SECAGG_SERVER_WORKFLOW}:SecAggPlusWorkflow.__call__",
        ),
    ),
)


# SHA-256 of the source of every Flower object an adaptation relies on, as shipped in flwr
# FLWR_VERIFIED. Recomputed by tests/federated/test_flower_compat.py: a mismatch names the
# adaptation to re-read. `python -m federated.flower_compat` prints them for the installed flwr.
PINNED_SOURCES: dict[str, str] = {
    "flwr.client.mod.secure_aggregation.secaggplus_mod:_collect_masked_vectors": "c8cc0c712d7c6cfdd0767dc8e779783dbb85ad2f698c2e34190cf2eb5d50d6f4",
    "flwr.client.mod.secure_aggregation.secaggplus_mod:_setup": "01bb1d0861adf10d82bd1c07455dc8cab9c332db32a88d9da9e09b647870d92e",
    "flwr.client.mod.secure_aggregation.secaggplus_mod:_share_keys": "79bfe0d2bce3357080dcc6f6001337240e5d23d5a370449c28e70c6726790f40",
    "flwr.client.mod.secure_aggregation.secaggplus_mod:_unmask": "b097504741d96e16a79054c28b1c4940e6e3a8f967d71a6ac2e4305273876bde",
    "flwr.server.superlink.fleet.vce.vce_api:add_messages_to_queue": "90669a453e0877556bd5640c89c6340a5f1f2f824ad4808a6a26b4e81a0c76f4",
    "flwr.server.superlink.fleet.vce.vce_api:put_message_into_state": "e110a5b27cb4aa1b5025dc582441c59c58cd47234a95831700befe5966b552a6",
    "flwr.server.superlink.fleet.vce.vce_api:start_vce": "d54a77ed45edf023b1d6d8e69994206a557b9cea500751862dd5e22d0878e914",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow:SecAggPlusWorkflow.__call__": "fc8cab32e6b1364d2c1d2631cb59293fbfc49b67d19811d790723f12bfab935a",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow:SecAggPlusWorkflow.collect_masked_vectors_stage": "c4608e61a1b5efe75245c8a114da0666e846e3c6a8e1b54045597cdd23d0fb52",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow:SecAggPlusWorkflow.unmask_stage": "a941c5367315c3c12a47c064da94152825596f435635be9f04191fbe58e0115c",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow:WorkflowState": "d0f2af5954997182451e83552c01d030a4b2a0ae17db61bf135cdf8aa98fb1fc",
    "flwr.supercore.inflatable.inflatable_utils:pull_and_inflate_object_from_tree": "977cb8a15932e73e659bdc6f74d42c7318a00e0b431f3c3eb45a45dece7a2c34",
    "flwr.supercore.inflatable.inflatable_utils:pull_objects": "0f5b6d34fcd4fd2dbce7d3b1ce5b6e99c2f2c26f5841831debebc55480827381",
    "flwr.supercore.superexec.executor.factory:get_executor": "9a4ba21e06f476f18edc16153ff95a4aba064e09098b6e32e615b9b8b5ac206d",
    "flwr.supercore.superexec.run_superexec:run_superexec": "03d363749a0fb2b51f0cbdcf59f2cfd1ef4dab6a448535815b3884b0b3b03310",
    "flwr.supernode.start_client_internal:start_client_internal": "1689ad636bd5386d906306f83c7de991b523780f50a2134358608e84769cc51c",
}


def flower_version() -> str:
    import flwr

    return str(flwr.__version__)


_warned: set[str] = set()
_warn_lock = threading.Lock()


def adaptation_enabled(name: str) -> bool:
    """Whether adaptation ``name`` applies to the installed flwr (warns once when it does not)."""
    installed = flower_version()
    if installed == FLWR_VERIFIED:
        return True
    with _warn_lock:
        if name not in _warned:
            _warned.add(name)
            log.warning(
                "flwr %s is installed; qledger's %r adaptation was verified on %s only, so "
                "Flower's own behaviour is used (see docs/federated.md, 'Upgrading Flower')",
                installed,
                name,
                FLWR_VERIFIED,
            )
    return False


def resolve(target: str) -> Any:
    """The object named ``"module:qualname"`` (as it is now, patched or not)."""
    module_name, _, qualname = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def source_of(target: str) -> str:
    """The source text of ``"module:qualname"`` as installed, read from the module's file.

    Read from the file, not from the live attribute: once a patch has replaced a module
    attribute, the attribute is our code, and the pin is about Flower's.
    """
    module_name, _, qualname = target.partition(":")
    text = inspect.getsource(importlib.import_module(module_name))
    body: list[ast.stmt] = ast.parse(text).body
    node: ast.stmt | None = None
    for part in qualname.split("."):
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and n.name == part
            ),
            None,
        )
        if node is None:
            raise LookupError(f"{target}: no definition of {part!r} in {module_name}")
        body = node.body
    assert node is not None and node.end_lineno is not None
    decorators = getattr(node, "decorator_list", [])
    start = min([node.lineno, *(d.lineno for d in decorators)])
    return "\n".join(text.splitlines()[start - 1 : node.end_lineno])


def source_digest(target: str) -> str:
    """SHA-256 of the source of ``target`` as installed (what PINNED_SOURCES holds)."""
    return hashlib.sha256(source_of(target).encode()).hexdigest()


# --- the patches --------------------------------------------------------------------------------


def _flower_module(name: str) -> Any:
    """A Flower module whose globals a patch replaces (Any: replaced from outside on purpose)."""
    return importlib.import_module(name)


PULL_INITIAL_BACKOFF = 0.02  # s; our receivers ask within milliseconds of the upload
PULL_BACKOFF_CAP = 1.0  # s; Flower's own first backoff, now the longest wait
_SHORT_BACKOFF_MARK = "_qledger_short_backoff"


def _with_short_backoff(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def pull(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("initial_backoff", PULL_INITIAL_BACKOFF)
        kwargs.setdefault("backoff_cap", PULL_BACKOFF_CAP)
        return fn(*args, **kwargs)

    setattr(pull, _SHORT_BACKOFF_MARK, True)
    return pull


def patch_pull_backoff(module: ModuleType, name: str) -> bool:
    """Make ``module.name`` (a Flower pull function it imported) retry sooner; idempotent."""
    if not adaptation_enabled("pull-backoff"):
        return False
    fn = getattr(module, name)
    if not getattr(fn, _SHORT_BACKOFF_MARK, False):
        setattr(module, name, _with_short_backoff(fn))
    return True


def patch_simulation_dispatch(
    add_messages_to_queue: Callable[..., None], put_message_into_state: Callable[..., None]
) -> bool:
    """Install event-woken dispatch loops in the simulation engine of this process."""
    if not adaptation_enabled("simulation-dispatch"):
        return False
    vce_api = _flower_module(VCE_API)
    vce_api.add_messages_to_queue = add_messages_to_queue
    vce_api.put_message_into_state = put_message_into_state
    return True


def patch_supernode_sleeps(sleep_map: Mapping[float, float]) -> bool:
    """Map the SuperNode loop's hard-coded sleeps (by value) and leave every other sleep alone."""
    if not adaptation_enabled("supernode-sleeps"):
        return False
    import time

    loop = _flower_module(SUPERNODE_LOOP)

    def sleep(seconds: float) -> None:
        time.sleep(sleep_map.get(seconds, seconds))

    seen = SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("_")})
    seen.sleep = sleep
    loop.time = seen
    return True


def patch_superexec_executor(factory: Callable[..., Any]) -> bool:
    """Have the SuperExec build its executors with ``factory``."""
    if not adaptation_enabled("superexec-executor"):
        return False
    _flower_module(SUPEREXEC_RUN).get_executor = factory
    return True


def patch_secagg_primitives(
    *,
    generate_key_pairs: Callable[..., Any],
    pseudo_rand_gen: Callable[..., Any],
    create_shares: Callable[..., Any],
    combine_shares: Callable[..., Any],
) -> None:
    """Point Flower's SecAgg+ client mod and server workflow at our primitives (idempotent).

    Raises FlowerNotVerified on any other flwr: SecAgg+ must not run on unchecked masks.
    """
    installed = flower_version()
    if installed != FLWR_VERIFIED:
        raise FlowerNotVerified("SecAgg+ with full-strength masks", installed)
    client = _flower_module(SECAGG_CLIENT_MOD)
    client.generate_key_pairs = generate_key_pairs
    client.pseudo_rand_gen = pseudo_rand_gen
    client.create_shares = create_shares
    server = _flower_module(SECAGG_SERVER_WORKFLOW)
    server.pseudo_rand_gen = pseudo_rand_gen
    server.combine_shares = combine_shares


def secagg_keys_ahead_supported() -> bool:
    """Whether next round's SecAgg+ keys may be set up ahead (else Flower's four stages)."""
    return adaptation_enabled("secagg-keys-ahead")


def secagg_private_stages() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Flower's private ``_setup`` and ``_share_keys`` (keys-ahead only; see ADAPTATIONS)."""
    client = importlib.import_module(SECAGG_CLIENT_MOD)
    return client._setup, client._share_keys


if __name__ == "__main__":  # the digests of the installed flwr, in PINNED_SOURCES' form
    for target in sorted({t for a in ADAPTATIONS for t in a.relies_on}):
        print(f'    "{target}": "{source_digest(target)}",')
