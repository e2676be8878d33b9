"""The import direction, checked:
cli > api > credit | federated | traceability > simulator > ledger.

The rule lives in pyproject.toml ([tool.importlinter]) and is enforced by import-linter, which
reads every import (lazy ones inside functions included) from the source without running it.
The first test checks the tree as it is; the others plant a forbidden import in a copy of the
tree and check that the linter refuses it, naming the broken rule and the offending import, so
a contract that silently checks nothing would fail here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ledger", "simulator", "credit", "federated", "traceability", "api", "cli")
RULE = "cli > api > credit | federated | traceability > simulator > ledger"


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the tree at ``root`` (its pyproject.toml holds the contract)."""
    lint_imports = Path(sys.executable).parent / "lint-imports"
    if not lint_imports.exists():
        pytest.fail(f"lint-imports is not installed beside {sys.executable}: `make install`")
    # The tree under test comes first on the path, before any installed copy of the packages.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(dest: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package,
            dest / package,
            ignore=lambda _dir, names: [
                n for n in names if not (n.endswith(".py") or (Path(_dir) / n).is_dir())
            ],
        )
    return dest


def test_import_layers_hold() -> None:
    result = _lint_imports(ROOT)
    if result.returncode != 0:
        pytest.fail(
            f"an import breaks the layering rule {RULE!r} (pyproject.toml [tool.importlinter]):\n"
            f"{result.stdout}{result.stderr}"
        )
    assert f"{RULE} KEPT" in result.stdout
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("importer", "planted", "forbidden"),
    [
        # ledger stands alone: a verifier must not pull in the service.
        ("ledger/merkle.py", "import api.settings", "ledger.merkle -> api.settings"),
        # a lazy import inside a function is an import all the same.
        (
            "simulator/population.py",
            "def _sneaky() -> None:\n    import credit.score  # noqa: F401\n",
            "simulator.population -> credit.score",
        ),
        # credit and federated are siblings: neither may import the other.
        ("federated/data.py", "from credit import features", "federated.data -> credit"),
        # the service must not reach up into the command line.
        ("api/anchorer.py", "import cli", "api.anchorer -> cli"),
    ],
)
def test_a_planted_upward_import_is_refused(
    tmp_path: Path, importer: str, planted: str, forbidden: str
) -> None:
    tree = _copy_tree(tmp_path)
    module = tree / importer
    module.write_text(module.read_text() + "\n" + planted + "\n")

    result = _lint_imports(tree)

    assert result.returncode != 0, f"the planted import was accepted:\n{result.stdout}"
    assert f"{RULE} BROKEN" in result.stdout
    assert forbidden in result.stdout, result.stdout
