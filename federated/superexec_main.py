"""``flower-superexec`` whose ClientApp processes start warm (run as a script by federated.deploy).

With Flower's defaults a SuperNode starts its own SuperExec, and that SuperExec starts a new
``flwr-clientapp`` *program* for every message: a fresh interpreter that imports flwr, numpy,
torch and, at the first optimizer step, ``torch._dynamo`` (~5 CPU-seconds on this project's
machine) before the task's training does anything. Three suppliers on two cores spent most of a
deployment round doing exactly that.

Flower's SuperNode also has ``--isolation process``: it then starts no SuperExec and waits for
an external one to acquire tasks from its Runtime API. This module is that external SuperExec:
the stock ``flower-superexec`` entry point, main loop, authentication and parent monitoring,
with one difference in how a ClientApp task is started. Its executor (the part Flower's
``Executor`` protocol defines) forks a child of this already warm process, and the child runs
Flower's own ``run_clientapp`` with the task token - exactly what the ``flwr-clientapp`` program
would run, minus the interpreter start-up and imports. Each task still gets its own process,
which reads the task, loads the ClientApp from the installed FAB, replies and exits, so nothing
of one task's state reaches the next. Other task types go to Flower's ``SubprocessExecutor``.

The heavy third-party modules are imported once, before the first task; the app's own modules
are not (each child loads them from the FAB the SuperLink distributed, as ``flwr-clientapp``
does). Nothing runs torch before a fork, so no thread pool is copied into a child.

Run it by file path beside a SuperNode started with ``--isolation process``::

    python federated/superexec_main.py --runtime-api-address 127.0.0.1:PORT --insecure \
        --parent-pid SUPERNODE_PID [--superexec-auth-secret-file FILE]
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import traceback
from logging import INFO
from typing import Any

import flwr.supernode.runtime.run_clientapp as _clientapp_runtime
from flwr.supercore import log
from flwr.supercore.cli.flower_superexec import flower_superexec
from flwr.supercore.constant import ExecutorType, TaskType
from flwr.supercore.superexec.executor import (
    ExecutionSpec,
    LaunchResult,
    SubprocessExecutor,
    get_executor,
)
from flwr.supercore.tls import validate_and_resolve_root_certificates
from flwr.supernode.runtime.run_clientapp import run_clientapp

from federated.flower_compat import patch_pull_backoff, patch_superexec_executor

# What a qledger ClientApp imports that is expensive (measured cold: flwr's runtime ~0.9 s,
# torch ~1.7 s, torch._dynamo ~2.5 s more). Override with QLEDGER_CLIENTAPP_PRELOAD
# (comma-separated module names).
DEFAULT_PRELOAD = (
    "numpy",
    "torch",
    "torch._dynamo",  # torch.optim imports it on first use (~2.5 s)
    "flwr.app",
    "flwr.clientapp",
    "flwr.client.mod",
    "flwr.common",
    "flwr.compat.common.recorddict_compat",
    "flwr.supercore.differential_privacy",
)


def preload_modules() -> tuple[str, ...]:
    configured = os.environ.get("QLEDGER_CLIENTAPP_PRELOAD")
    if configured is None:
        return DEFAULT_PRELOAD
    return tuple(name.strip() for name in configured.split(",") if name.strip())


def preload(modules: tuple[str, ...]) -> None:
    for name in modules:
        importlib.import_module(name)


class ForkingClientAppExecutor:
    """A Flower ``Executor`` that starts each ClientApp task as a fork of this process."""

    def __init__(self) -> None:
        self._fallback = SubprocessExecutor()
        self._children: set[int] = set()

    def get_eligible_capacity(
        self,
        supported_task_types: set[TaskType],
        *,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> tuple[set[TaskType], set[str]]:
        return self._fallback.get_eligible_capacity(
            supported_task_types, insecure=insecure, root_certificates_path=root_certificates_path
        )

    def wait_for_capacity(
        self,
        task_type: TaskType | None = None,
        *,
        fab_hash: str | None = None,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> None:
        return None

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type != TaskType.CLIENT_APP:
            return self._fallback.launch(spec)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            return LaunchResult.failed(f"fork failed: {exc}")
        if pid == 0:
            _run_task(spec)  # never returns
        self._children.add(pid)
        log(INFO, "ClientApp task %d: started in warm process %d", spec.task_id, pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished task processes (they would linger as zombies otherwise)."""
        for pid in list(self._children):
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if not done:
                    continue
            self._children.discard(pid)

    def close(self) -> None:
        # Running tasks end on their own: each monitors this process (``parent_pid``) and stops
        # when it is gone, as a ``flwr-clientapp`` started by the stock executor would.
        self._fallback.close()


def _run_task(spec: ExecutionSpec) -> None:
    """Child side of a fork: run one ClientApp task, then leave without unwinding the parent's
    stack (a ``SystemExit`` escaping here would continue the SuperExec loop in the child)."""
    code = 1
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        sys.argv = ["flwr-clientapp"]  # what Flower's exit handling keys on
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must never return into the SuperExec loop
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _executor_factory(executor_type: ExecutorType, *args: Any, **kwargs: Any) -> Any:
    if executor_type == ExecutorType.SUBPROCESS:
        return ForkingClientAppExecutor()
    return get_executor(executor_type, *args, **kwargs)


if __name__ == "__main__":
    # Run by path, this file's directory is sys.path[0]; its modules (config, data, model...)
    # must not shadow top-level names for what the preload and the tasks import.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    preload(preload_modules())
    # Every task (a fork of this process, so it inherits this) asks for its message at once,
    # often before its SuperNode has pulled the message's objects from the SuperLink.
    patch_pull_backoff(_clientapp_runtime, "pull_and_inflate_object_from_tree")
    patch_superexec_executor(_executor_factory)
    flower_superexec()  # returns None: the process exits 0 when the SuperExec stops
