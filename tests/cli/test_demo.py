"""`qledger demo --quick` end to end, as a user runs it, asserting on what it produced."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from credit.gates import GateResult, gate_reasons
from tests.helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.anvil]


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "demo", "--quick", "--data-dir", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((data / "demo-result.json").read_text())
    assert result["accepted"] > 100 and result["rejected"] == 0
    assert result["anchored"] == result["accepted"]
    assert result["fl_rounds_anchored"] == 2 and result["fl_final_hash"].startswith("0x")
    # Four suppliers with a history and one newcomer with two self-signed records: the
    # newcomer gets "insufficient evidence" (no number) and ranks last.
    assert len(result["ranking"]) == 5
    thin = result["ranking"][-1]
    assert thin["status"] == "insufficient_evidence" and thin["score"] is None
    assert all(r["status"] == "scored" for r in result["ranking"][:-1])
    # Every scored supplier has an explained score whose contributions add up.
    for credit in result["credits"].values():
        if credit.get("status") == "insufficient_evidence":
            continue
        total = credit["base_value"] + sum(c["points"] for c in credit["contributions"])
        assert abs(total - credit["score"]) < 1e-6
        assert len(credit["reason_codes"]) <= 4 and credit["gate"]["policy"]
    assert any(credit["reason_codes"] for credit in result["credits"].values())
    assert result["repair"]["after"] > result["repair"]["before"]
    assert abs(sum(r["weight"] for r in result["incident"]["rows"]) - 1) < 1e-9
    # Issue 19's story: the failed vehicle's recall scope, an investigation forwarded to the
    # suspect lot's maker, answered with an 8D and closed by each sender, and the matrix over
    # exactly the failed vehicle's supplier lots.
    trace = result["trace"]
    assert trace["scopeVehicles"] >= 1 and trace["scopeLevels"]
    thread = trace["notification"]
    assert thread["state"] == "closed" and thread["sender"] == "OEM-0001"
    (forward,) = thread["forwards"]
    assert (
        forward["state"] == "closed" and forward["recipient"] == trace["suspectLot"].split("/")[0]
    )
    assert trace["eightD"] in forward["links"]["correctiveActions"]
    lots = {(r["supplier_id"], lot) for r in result["incident"]["rows"] for lot in r["lots"]}
    as_built = {(n.split("/")[0], n.split("/")[2]) for n in trace["asBuiltSupplierLots"]}
    suspect = trace["suspectLot"].split("/")
    assert lots == as_built and (suspect[0], suspect[2]) in lots
    # Issue 22: for the 8D's D4, the suspect lot's supplier ran `qledger fl explain` with the
    # anchored model (hash read from the chain) on its own shots, in which vibration drifted; the
    # 8D update it signed carries the analysis's hash, and the analysis stays in its folder.
    rc = result["root_cause"]
    analysis = Path(rc["analysis"])
    assert rc["supplier"] == suspect[0] and rc["modelHash"] == result["fl_final_hash"]
    assert hashlib.sha256(analysis.read_bytes()).hexdigest() == rc["analysisSha256"]
    assert rc["attachments"] == [
        {"name": analysis.name, "mediaType": "application/json", "sha256": rc["analysisSha256"]}
    ]
    doc = json.loads(analysis.read_text())
    assert doc["supplier_id"] == suspect[0] and doc["drivers"][0]["feature"] == rc["drifted"]
    # The quick demo's 2-round model predicts little of the rise: the analysis says so.
    assert (doc["accounted"] < 0.5) == ("not a root-cause hint" in doc["note"])
    assert "fl explain" in proc.stdout
    genuine = [v for v in result["verifications"] if not v["forged"]]
    forged = [v for v in result["verifications"] if v["forged"]]
    assert genuine and all(v["ok"] and v["exitCode"] == 0 for v in genuine)
    assert forged and not forged[0]["ok"] and forged[0]["exitCode"] == 1
    report = Path(result["report"])
    assert report.exists() and report.read_text().count("<img") >= 4
    # Issue 20: the report explains a failed gate with the gate's own reason first.
    page = report.read_text()
    for sid, credit in result["credits"].items():
        gate = GateResult.model_validate(credit["gate"])
        cells = re.search(
            rf"<tr><td>{re.escape(sid)}</td><td>([^<]*)</td><td>[^<]*</td>"
            rf"<td>(pass|fail)</td><td>(.*?)</td>",
            page,
        )
        assert cells is not None
        score = "insufficient evidence" if credit["score"] is None else f"{credit['score']:.1f}"
        assert cells.groups()[:2] == (score, gate.outcome)  # one response per row
        if gate.outcome == "fail":
            assert cells.group(3).startswith(html.escape(f"gate: {gate_reasons(gate)[0]}"))
    assert "Dashboard" in proc.stdout and "HTML report" in proc.stdout
    # Everything it started, it stopped: no anvil left for this data dir.
    assert not (data / "chain" / "anvil.pid").exists() or not _alive(data / "chain" / "anvil.pid")


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True
