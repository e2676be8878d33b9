"""Compiled contract artifacts: compile the Solidity sources, and load the committed build.

The runtime never needs a compiler: ``contracts/build/<Name>.json`` is committed and read by
:func:`load_artifact`. :func:`compile_contracts` (``python -m ledger.artifacts``) regenerates those
files with solc 0.8.28 from the npm package ``solc``, driven through py-solc-x's standard-JSON
interface by the wrapper that ``scripts/install_solc.sh`` installs at
``$SOLCX_BINARY_PATH/solc-v0.8.28`` (default ``.cache/solcx`` in the repository).

Each artifact is ``{contractName, abi, bytecode, deployedBytecode, compiler: {version,
evmVersion, optimizer, openzeppelin}, sourceHash}``, where ``sourceHash`` is the keccak256 of every
``contracts/*.sol`` source (see :func:`source_hash`), so a stale build is detected without
compiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import keccak

from ledger.errors import ChainError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONTRACTS_DIR = REPO_ROOT / "contracts"
BUILD_DIR = CONTRACTS_DIR / "build"
NODE_MODULES = REPO_ROOT / "node_modules"
DEFAULT_SOLCX_DIR = REPO_ROOT / ".cache" / "solcx"
INSTALL_SOLC_SCRIPT = REPO_ROOT / "scripts" / "install_solc.sh"

SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"
OPTIMIZER: dict[str, Any] = {"enabled": True, "runs": 200}
CONTRACT_NAMES = ("QualityLedger", "ModelRegistry", "CommitmentLog")
ARTIFACTS_ENV = "QLEDGER_ARTIFACTS_DIR"


class ArtifactError(ChainError):
    """A compiled artifact is missing or unreadable, or the contracts do not compile."""

    code = "artifact_error"
    http_status = 500  # the service's own installation is broken, not its upstream


def artifacts_dir() -> Path:
    """Where artifacts are read from: ``$QLEDGER_ARTIFACTS_DIR`` or ``contracts/build``."""
    override = os.environ.get(ARTIFACTS_ENV)
    return Path(override) if override else BUILD_DIR


def source_files() -> list[Path]:
    """The Solidity sources of this project, sorted by name."""
    return sorted(CONTRACTS_DIR.glob("*.sol"))


def source_hash(sources: list[Path] | None = None) -> str:
    """keccak256 over every source as ``<name> NUL <content> NUL``, in name order (0x-hex)."""
    data = bytearray()
    for path in sources if sources is not None else source_files():
        data += path.name.encode() + b"\0" + path.read_bytes() + b"\0"
    return "0x" + keccak(bytes(data)).hex()


def openzeppelin_version() -> str | None:
    """The installed ``@openzeppelin/contracts`` version, if node_modules has it."""
    package = NODE_MODULES / "@openzeppelin" / "contracts" / "package.json"
    if not package.is_file():
        return None
    return str(json.loads(package.read_text())["version"])


def solc_binary() -> Path:
    """The solc(-js wrapper) executable, installing the wrapper first if it is missing."""
    os.environ.setdefault("SOLCX_BINARY_PATH", str(DEFAULT_SOLCX_DIR))
    binary = Path(os.environ["SOLCX_BINARY_PATH"]) / f"solc-v{SOLC_VERSION}"
    if not binary.is_file():
        try:
            subprocess.run(
                ["bash", str(INSTALL_SOLC_SCRIPT)],
                check=True,
                capture_output=True,
                text=True,
                env=os.environ.copy(),
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise ArtifactError(
                f"solc {SOLC_VERSION} is not installed at {binary} and scripts/install_solc.sh "
                f"failed (run make install): {detail.strip()}"
            ) from exc
    return binary


def standard_json_input(sources: list[Path] | None = None) -> dict[str, Any]:
    """The solc standard-JSON input for our sources; imports resolve from node_modules."""
    paths = sources if sources is not None else source_files()
    selection = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]
    return {
        "language": "Solidity",
        "sources": {
            f"contracts/{path.name}": {"content": path.read_text(encoding="utf-8")}
            for path in paths
        },
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": dict(OPTIMIZER),
            "outputSelection": {f"contracts/{path.name}": {"*": selection} for path in paths},
        },
    }


def compile_contracts(write: bool = True) -> dict[str, dict[str, Any]]:
    """Compile ``contracts/*.sol``; write ``contracts/build/<Name>.json`` unless ``write`` is off.

    Returns the artifacts by contract name.
    """
    import solcx  # only needed to compile; the runtime reads committed artifacts
    from solcx.exceptions import SolcError
    from solcx.wrapper import get_version_str_from_solc_binary

    binary = solc_binary()
    sources = source_files()
    if not sources:
        raise ArtifactError(f"no Solidity sources in {CONTRACTS_DIR}")
    try:
        version = get_version_str_from_solc_binary(binary)
        output = solcx.compile_standard(
            standard_json_input(sources),
            solc_binary=binary,
            base_path=REPO_ROOT,
            allow_paths=[NODE_MODULES],
        )
    except (SolcError, OSError, subprocess.SubprocessError) as exc:
        raise ArtifactError(f"compiling {CONTRACTS_DIR} failed: {exc}") from exc

    compiler = {
        "version": version,
        "evmVersion": EVM_VERSION,
        "optimizer": dict(OPTIMIZER),
        "openzeppelin": openzeppelin_version(),
    }
    digest = source_hash(sources)
    artifacts: dict[str, dict[str, Any]] = {}
    for source_id, contracts in sorted(output.get("contracts", {}).items()):
        if not source_id.startswith("contracts/"):
            continue
        for name, data in sorted(contracts.items()):
            bytecode = data["evm"]["bytecode"]["object"]
            if not bytecode:
                continue  # interfaces and abstract contracts
            artifacts[name] = {
                "contractName": name,
                "sourceName": source_id,
                "abi": data["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
                "compiler": compiler,
                "sourceHash": digest,
            }
    missing = [name for name in CONTRACT_NAMES if name not in artifacts]
    if missing:
        raise ArtifactError(f"compiler output lacks {missing}")
    if write:
        BUILD_DIR.mkdir(parents=True, exist_ok=True)
        for name, artifact in artifacts.items():
            path = BUILD_DIR / f"{name}.json"
            path.write_text(json.dumps(artifact, indent=2) + "\n", encoding="utf-8")
        load_artifact.cache_clear()
    return artifacts


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The committed artifact of contract ``name`` (no compiler needed)."""
    path = artifacts_dir() / f"{name}.json"
    try:
        artifact: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"artifact {path} is missing; run `python -m ledger.artifacts` to compile"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {path} is unreadable: {exc}") from exc
    for key in ("abi", "bytecode", "deployedBytecode"):
        if key not in artifact:
            raise ArtifactError(f"artifact {path} lacks {key!r}")
    return artifact


def is_fresh(name: str) -> bool:
    """Whether the committed artifact of ``name`` was built from the current sources."""
    return bool(load_artifact(name).get("sourceHash") == source_hash())


def main(argv: list[str] | None = None) -> int:
    """``python -m ledger.artifacts [--check]``: compile, or only check freshness."""
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        stale = [name for name in CONTRACT_NAMES if not is_fresh(name)]
        if stale:
            print(f"stale artifacts: {', '.join(stale)}; run python -m ledger.artifacts")
            return 1
        print("artifacts are fresh")
        return 0
    artifacts = compile_contracts()
    for name, artifact in artifacts.items():
        size = (len(artifact["deployedBytecode"]) - 2) // 2
        print(f"{name}: {size} bytes runtime -> {BUILD_DIR / (name + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
