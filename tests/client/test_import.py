"""`qledger import` (issue 20 item 1): a supplier's MES export (CSV or xlsx) becomes signed
records, and the adversaries are the export itself (typos, unmapped values, counts that do not
add up), the wrong key (another supplier's, an OEM's, an unregistered one), a process killed
mid-import and a re-run of the same file (never a second record for one row)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from client.importer import Importer, StateFile, default_state_path, read_rows
from client.mapping import load_mapping
from client.service import QledgerClient, ServiceError
from ledger.records import Domain
from tests.api.conftest import make_service
from tests.client.conftest import MAPPING, Live, recent, sample_csv, sample_xlsx
from tests.helpers import ROOT

runner = CliRunner()

BAD_ROWS = [
    'row 7: payload.sampleSize (column "Sample"): not a whole number; '
    "expected a whole number, got '5O'",
    'row 11: payload.disposition (column "Result"): not a value the mapping knows; '
    "expected NOK or OK, got 'PASS'",
    "row 12: record: sample larger than lot; expected <= 40, got 50",
]


def run_import(live: Live, tmp_path: Path, source: Path, *extra: str, key: str = "supplier"):
    return runner.invoke(
        app,
        [
            "import",
            str(source),
            "--mapping",
            str(MAPPING),
            "--key",
            str(live.key_file(key, tmp_path)),
            "--url",
            live.url,
            *extra,
        ],
    )


def lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("row ")]


def test_dry_run_reports_each_refused_row_and_stores_nothing(live: Live, tmp_path: Path) -> None:
    source = sample_csv(tmp_path, live.prefix)
    result = run_import(live, tmp_path, source, "--dry-run")
    assert result.exit_code == 1, result.output
    assert lines(result.output) == BAD_ROWS
    assert "12 rows: 9 would be submitted, 0 already accepted" in result.output
    assert "3 would be refused" in result.output
    assert "Traceback" not in result.output
    assert live.count() == 0
    assert not default_state_path(source).exists()


def test_csv_import_then_rerun_and_lost_state_never_duplicate(live: Live, tmp_path: Path) -> None:
    source = sample_csv(tmp_path, live.prefix)
    first = run_import(live, tmp_path, source)
    assert first.exit_code == 1, first.output  # three rows refused
    assert lines(first.output) == BAD_ROWS
    assert "12 rows: 9 accepted, 0 already on the ledger (skipped)" in first.output
    stored = live.stored()
    assert len(stored) == 9
    assert {r.lot_id for r in stored} == {
        f"{live.prefix}-{4711 + i}" for i in range(12) if i not in (5, 9, 10)
    }
    # The measurement columns became the sensorReport, the defect columns the defectList.
    lot = next(r for r in stored if r.lot_id == f"{live.prefix}-4719")
    payload = lot.payload
    assert (lot.quantity, lot.defects) == (80, 2)
    assert payload["disposition"] == "non_conformant"
    assert payload["sensorReport"][0]["values"] == [9.988, 9.994, 10.015, 9.976, 9.983]
    # The MES's local time, at the mapping's +01:00.
    assert lot.event_time == int(recent(8).replace(tzinfo=UTC).timestamp()) - 3600

    again = run_import(live, tmp_path, source)
    assert "12 rows: 0 accepted, 9 already on the ledger (skipped)" in again.output
    assert live.count() == 9

    # The state file lost: the content-derived nonce still makes each row one record.
    default_state_path(source).unlink()
    lost = run_import(live, tmp_path, source)
    assert "12 rows: 0 accepted, 9 already on the ledger (skipped)" in lost.output, lost.output
    assert live.count() == 9


def test_xlsx_import_and_the_same_rows_as_csv_are_the_same_records(
    live: Live, tmp_path: Path
) -> None:
    sheet = sample_xlsx(tmp_path, live.prefix)
    result = run_import(live, tmp_path, sheet)
    assert lines(result.output) == BAD_ROWS
    assert "12 rows: 9 accepted" in result.output
    assert live.count() == 9
    # Excel's datetime cells and numbers give the very drafts the CSV's text gives.
    csv_result = run_import(live, tmp_path, sample_csv(tmp_path, live.prefix))
    assert "12 rows: 0 accepted, 9 already on the ledger (skipped)" in csv_result.output
    assert live.count() == 9


def test_a_repeated_row_in_one_file_is_one_record(live: Live, tmp_path: Path) -> None:
    source = sample_csv(tmp_path, live.prefix)
    text = source.read_text().splitlines()
    source.write_text("\n".join([*text, text[1]]) + "\n")  # row 14 repeats row 2
    result = run_import(live, tmp_path, source)
    assert "row 14: the same record as row 2" in result.output
    assert live.count() == 9


def test_wrong_keys_are_refused_row_by_row(live: Live, tmp_path: Path) -> None:
    source = sample_csv(tmp_path, live.prefix)
    # Another supplier's key filing SUP-01's inspections.
    other = run_import(live, tmp_path, source, "--dry-run", key="supplier2")
    assert other.exit_code == 1
    refusals = lines(other.output)
    assert (
        "row 2: record.subject: a supplier may only file evidence about itself; "
        "expected SUP-02, got 'SUP-01'"
    ) in refusals
    assert len([r for r in refusals if "record.subject" in r]) == 9
    # An OEM's key may not sign a supplier's inspections.
    oem = run_import(live, tmp_path, source, key="oem")
    assert "row 2: kind: a OEM key may not sign inspection records" in oem.output
    assert live.count() == 0

    # The service's own refusals come back per row too (local checks off: role unknown).
    mapping = load_mapping(MAPPING)
    rows = read_rows(source, mapping)
    with QledgerClient(live.url) as client:
        cp = client.checkpoint()
        domain = Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
        importer = Importer(
            client,
            live.party("supplier2").signer,
            domain,
            mapping,
            StateFile(tmp_path / "state.jsonl"),
        )
        summary = importer.run(rows)
    refused = [p for o in summary.refused for p in o.problems]
    assert (
        "row 2: refused by the service: subject_mismatch: a supplier may only file "
        in (refused[0][:80])
    )
    assert "expected SUP-02, got 'SUP-01'" in refused[0]
    assert len(refused) == 12 and live.count() == 0


def test_an_unregistered_key_and_a_bad_mapping_end_in_one_line(live: Live, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger.json"
    stranger.write_text(json.dumps({"private_key": "0x" + "11" * 32}))
    source = str(sample_csv(tmp_path, live.prefix))

    def run(mapping: Path, *extra: str) -> Any:
        argv = ["import", source, "--mapping", str(mapping), "--key", str(stranger)]
        return runner.invoke(app, [*argv, "--url", live.url, *extra])

    result = run(MAPPING)
    assert result.exit_code == 1
    assert "cannot sign in, every row would be refused" in result.output

    bad = tmp_path / "bad.toml"
    bad.write_text(MAPPING.read_text().replace('"Bore 5"', '"Bore 6"'))
    missing = run(bad)
    assert missing.exit_code == 2
    assert "lacks the column(s) ['Bore 6']" in missing.output
    doubled = tmp_path / "doubled.csv"
    doubled.write_text(Path(source).read_text().replace("Bore 2", "Bore 1", 1))
    argv = ["import", str(doubled), "--mapping", str(MAPPING), "--key", str(stranger)]
    twice = runner.invoke(app, [*argv, "--url", live.url])
    assert twice.exit_code == 2
    assert "has the column(s) ['Bore 1'] more than once" in twice.output
    wrong_kind = run(MAPPING, "--kind", "delivery")
    assert wrong_kind.exit_code == 2
    assert "--kind delivery but the mapping is for inspection" in wrong_kind.output


class _AnswerLost(QledgerClient):
    """The service applies the batch, then the importer dies before reading the answer."""

    def submit_batch(self, records: list[dict[str, Any]]) -> Any:
        super().submit_batch(records)
        raise KeyboardInterrupt("killed after the service applied the batch")


def test_a_batch_applied_but_unanswered_is_not_sent_twice(live: Live, tmp_path: Path) -> None:
    source = sample_csv(tmp_path, live.prefix)
    mapping = load_mapping(MAPPING)
    rows = read_rows(source, mapping)
    supplier = live.party("supplier").signer
    with QledgerClient(live.url) as client:
        cp = client.checkpoint()
    domain = Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
    state = tmp_path / "state.jsonl"
    with _AnswerLost(live.url) as dying, pytest.raises(KeyboardInterrupt):
        Importer(dying, supplier, domain, mapping, StateFile(state)).run(rows)
    assert live.count() == 9
    sent = [json.loads(line) for line in state.read_text().splitlines()]
    assert {e["state"] for e in sent} == {"sent"}
    # The re-run signs again (a new signedAt, so a new struct hash); the service refuses the
    # reused nonce and the row counts as the earlier run's record, whose hash the state holds.
    time.sleep(1.1)  # signedAt has whole seconds: within the same one the hash would repeat
    with QledgerClient(live.url) as client:
        importer = Importer(client, supplier, domain, mapping, StateFile(state), role="SUPPLIER")
        summary = importer.run(rows)
    assert summary.count("already") == 9 and summary.count("accepted") == 0
    assert {o.struct_hash for o in summary.outcomes if o.status == "already"} == {
        r.struct_hash for r in live.stored()
    }
    assert live.count() == 9


@pytest.mark.slow
def test_resume_after_the_process_is_killed(live: Live, tmp_path: Path) -> None:
    """A real `qledger import` of 300 lots SIGKILLed mid-run, then run again to the end:
    every row is on the ledger exactly once."""
    source = sample_csv(tmp_path, live.prefix)
    header, *body = source.read_text().splitlines()
    good = [line for line in body if "5O" not in line and "PASS" not in line and ",40," not in line]
    many = []
    for i in range(300):
        cells = good[i % len(good)].split(",")
        cells[1] = f"{live.prefix}-K-{i:04d}"
        many.append(",".join(cells))
    source.write_text("\n".join([header, *many]) + "\n")
    state = default_state_path(source)
    argv = [
        sys.executable, "-m", "cli", "import", str(source), "--mapping", str(MAPPING),
        "--key", str(live.key_file("supplier", tmp_path)), "--url", live.url,
        "--batch-size", "5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = state.read_text() if state.exists() else ""
        if text.count('"state":"accepted"') >= 50:  # some batches in, most still to come
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = live.count()
    assert 50 <= killed_at < 300, f"the kill landed outside the run ({killed_at} stored)"

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "300 rows:" in done.stdout and "0 refused" in done.stdout
    stored = live.stored()
    assert len(stored) == 300
    assert sorted(r.lot_id for r in stored) == [f"{live.prefix}-K-{i:04d}" for i in range(300)]


def test_no_key_in_output_logs_or_state(
    live: Live, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The importer holds the key for the whole run: nothing it prints, logs or writes to its
    state file (accepted, refused and duplicate rows alike) may contain it, in any spelling."""
    caplog.set_level(logging.DEBUG)
    secret = live.party("supplier").signer.private_key.hex()
    source = sample_csv(tmp_path, live.prefix)
    outputs = [run_import(live, tmp_path, source).output for _ in range(2)]
    outputs.append(run_import(live, tmp_path, source, "--dry-run").output)
    written = default_state_path(source).read_text()
    assert '"state":"accepted"' in written
    for text in [*outputs, caplog.text, written]:
        for form in (secret, secret.upper(), repr(bytes.fromhex(secret))[2:-1][:40]):
            assert form not in text


class _Counting(QledgerClient):
    """A client that notes each refusal of a batch (and passes it on)."""

    refusals: list[int]

    def submit_batch(self, records: list[dict[str, Any]]) -> Any:
        try:
            return super().submit_batch(records)
        except ServiceError as exc:
            self.refusals.append(exc.status)
            raise


@pytest.mark.slow
def test_a_busy_service_is_waited_for_not_given_up_on(tmp_path: Path) -> None:
    """The service's per-key intake limit answers 429 with Retry-After: the importer waits as
    told and finishes, where a client that does not wait is refused."""
    service = make_service(
        tmp_path, "sqlite", intake_records_per_second_per_key=4.0, intake_burst_per_key=3
    )
    with service.client:
        supplier = service.parties["supplier"].signer
        client = _Counting(http=service.client)
        client.refusals = []
        cp = client.checkpoint()
        domain = Domain(chainId=cp["chainId"], verifyingContract=cp["contract"])
        mapping = load_mapping(MAPPING)
        rows = read_rows(sample_csv(tmp_path, "BUSY"), mapping)
        state = StateFile(tmp_path / "state.jsonl")
        summary = Importer(client, supplier, domain, mapping, state, batch_size=3).run(rows)
        assert summary.count("accepted") == 9 and len(summary.refused) == 3
        assert 429 in client.refusals  # the limiter did bite, and the import waited it out
    service.ctx.engine.dispose()
