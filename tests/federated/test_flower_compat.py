"""Flower kept at arm's length: every adaptation is version-guarded, pinned, and in one place."""

from __future__ import annotations

import ast
import logging
import tomllib
import types
from pathlib import Path

import pytest

from federated import flower_compat
from federated.flower_compat import ADAPTATIONS, FLWR_VERIFIED, PINNED_SOURCES
from tests.helpers import ROOT

RELIED_ON = sorted({(a.name, t) for a in ADAPTATIONS for t in a.relies_on})


def test_the_installed_flower_is_the_verified_one_and_the_pin_agrees() -> None:
    assert flower_compat.flower_version() == FLWR_VERIFIED
    # Flower is the `fl` extra's (the light client installs without it).
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    deps = extras["fl"]
    assert any(d.startswith("flwr[") and d.endswith(f"=={FLWR_VERIFIED}") for d in deps), deps


def test_every_relied_on_flower_object_is_pinned_and_nothing_else() -> None:
    assert {t for _, t in RELIED_ON} == set(PINNED_SOURCES)


@pytest.mark.parametrize(("adaptation", "target"), RELIED_ON)
def test_the_flower_code_an_adaptation_relies_on_is_unchanged(adaptation: str, target: str) -> None:
    # Fails on a Flower upgrade that touches this code: re-read the adaptation, then re-pin
    # (`python -m federated.flower_compat`) and move FLWR_VERIFIED (docs/federated.md checklist).
    assert flower_compat.source_digest(target) == PINNED_SOURCES[target], (
        f"Flower changed {target}, which the {adaptation!r} adaptation relies on"
    )


def test_the_pin_reads_flowers_code_even_while_our_patch_is_installed() -> None:
    import flwr.server.superlink.fleet.vce.vce_api as vce_api

    from federated import flower_tuning

    target = f"{flower_compat.VCE_API}:add_messages_to_queue"
    before = (vce_api.add_messages_to_queue, vce_api.put_message_into_state)
    try:  # (an earlier simulation in this process may have installed it already)
        flower_compat.patch_simulation_dispatch(
            flower_tuning._add_messages_to_queue, flower_tuning._put_message_into_state
        )
        assert vce_api.add_messages_to_queue is flower_tuning._add_messages_to_queue
        assert flower_compat.source_digest(target) == PINNED_SOURCES[target]
    finally:
        vce_api.add_messages_to_queue, vce_api.put_message_into_state = before


@pytest.fixture
def another_flower(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(flower_compat, "flower_version", lambda: "1.42.0")
    monkeypatch.setattr(flower_compat, "_warned", set())
    return "1.42.0"


def test_on_another_flower_the_speed_adaptations_leave_flower_as_it_is(
    another_flower: str, caplog: pytest.LogCaptureFixture
) -> None:
    import flwr.server.superlink.fleet.vce.vce_api as vce_api
    import flwr.supercore.superexec.run_superexec as run_superexec
    import flwr.supernode.start_client_internal as supernode_loop

    def pull(*_: object, **__: object) -> None:
        return None

    module = types.ModuleType("fake_flower_module")
    module.pull_objects = pull  # type: ignore[attr-defined]
    before = (
        vce_api.add_messages_to_queue,
        vce_api.put_message_into_state,
        supernode_loop.time,
        run_superexec.get_executor,
    )
    with caplog.at_level(logging.WARNING, logger="federated.flower_compat"):
        assert not flower_compat.patch_pull_backoff(module, "pull_objects")
        assert not flower_compat.patch_pull_backoff(module, "pull_objects")
        assert not flower_compat.patch_simulation_dispatch(print, print)
        assert not flower_compat.patch_supernode_sleeps({3: 0.1})
        assert not flower_compat.patch_superexec_executor(print)
        assert not flower_compat.secagg_keys_ahead_supported()
    assert module.pull_objects is pull  # type: ignore[attr-defined]
    after = (
        vce_api.add_messages_to_queue,
        vce_api.put_message_into_state,
        supernode_loop.time,
        run_superexec.get_executor,
    )
    assert after == before
    warned = [r.getMessage() for r in caplog.records]
    # One warning per adaptation, naming both versions, not one per call.
    assert len(warned) == 5, warned
    assert all(another_flower in m and FLWR_VERIFIED in m for m in warned)


def test_on_another_flower_secagg_refuses_rather_than_use_32_bit_seed_masks(
    another_flower: str,
) -> None:
    from federated.secagg_primitives import use_secagg_primitives

    with pytest.raises(flower_compat.FlowerNotVerified) as info:
        use_secagg_primitives()
    assert info.value.expected == FLWR_VERIFIED and info.value.got == another_flower


def _flower_aliases(tree: ast.Module) -> set[str]:
    """Names a module binds to Flower modules (``import flwr.x as y``, ``import flwr``)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "flwr":
                    names.add(alias.asname or alias.name.split(".")[0])
    return names


def _reaches_into_flower(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    aliases = _flower_aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("flwr"):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private:
                found.append(f"{path.name}:{node.lineno} imports private {private}")
        targets = node.targets if isinstance(node, ast.Assign) else []
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in aliases
            ):
                found.append(f"{path.name}:{node.lineno} assigns {target.value.id}.{target.attr}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in aliases
        ):
            found.append(f"{path.name}:{node.lineno} setattr on {node.args[0].id}")
    return found


def test_no_module_but_flower_compat_reaches_into_flower() -> None:
    files = sorted((ROOT / "federated").glob("*.py"))
    found = [f for p in files if p.name != "flower_compat.py" for f in _reaches_into_flower(p)]
    assert found == []


def test_the_reach_in_detector_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import flwr.supernode.start_client_internal as loop\n"
        "from flwr.client.mod.secure_aggregation.secaggplus_mod import _setup\n"
        "loop.time = None\n"
        "setattr(loop, 'sleep', None)\n"
    )
    assert len(_reaches_into_flower(bad)) == 3
