"""Bulk import: the rows of a CSV file or an xlsx sheet, signed as records and submitted in
batches (``POST /v1/records:batch``), resumably and idempotently.

Idempotent by content. A row's key is the hash of the ledger's domain, the signer and the
row's draft; its nonce is derived from that key and its salt from the key and the signer's
private key (keyed, so the on-chain leaf stays unguessable). The service refuses a second
record with the same (signer, nonce), so the same row can never become two records, even
when the state file is lost.

Resumable. Before a batch is sent, each row's struct hash is appended to the state file
(``FILE.qledger-import.jsonl`` beside the input, or ``--state``), and after the answer its
outcome. A re-run skips rows accepted before; a row sent but not answered (the process was
killed) is signed again (a new ``signedAt``) and sent: the service either accepts it (the
first never arrived) or answers ``nonce_replayed`` (it did), which counts as accepted by the
earlier run. The state file holds row numbers, keys, hashes and outcomes: no key material.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from client.drafts import Draft, sign_draft
from client.errors import DEFAULT_BATCH
from client.mapping import Mapping, MappingError, Problem, RowError, fill
from client.service import QledgerClient, ServiceError
from ledger._hash import keccak
from ledger.canonical import canonical_json
from ledger.eip712 import record_struct_hash
from ledger.errors import LedgerError
from ledger.keys import Signer
from ledger.records import (
    KIND_SIGNER_ROLES,
    SELF_SUBJECT_KINDS,
    Domain,
    RecordKind,
    Role,
    SignedRecord,
    allowed_roles_text,
    check_event_time,
)

Status = Literal["accepted", "duplicate", "already", "refused", "same_as_row"]
# The service's default batch bound is 1,000 records and 32 MiB (api/settings.py); a smaller
# batch keeps each request short and a killed run's unanswered tail small.
MAX_BATCH_BYTES = 8 * 1024 * 1024
# The service's clock-skew bound on signedAt is 300 s by default: batches are signed just
# before they are sent, never all up front.
RETRIES = 5
SALT_CONTEXT = b"qledger/import/salt/v1"


@dataclass(frozen=True)
class Row:
    number: int  # as the spreadsheet shows it: the header is row 1
    cells: dict[str, Any]


@dataclass
class RowOutcome:
    row: int
    status: Status
    struct_hash: str | None = None
    problems: list[str] = field(default_factory=list)


@dataclass
class Summary:
    rows: int = 0
    outcomes: list[RowOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, *status: Status) -> int:
        return sum(o.status in status for o in self.outcomes)

    @property
    def refused(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status == "refused"]

    @property
    def ok(self) -> bool:
        return not self.refused

    def line(self, dry_run: bool = False) -> str:
        if dry_run:
            good = self.count("accepted")
            return (
                f"{self.rows} rows: {good} would be submitted, "
                f"{self.count('already')} already accepted, "
                f"{self.count('same_as_row')} repeat an earlier row, "
                f"{len(self.refused)} would be refused"
            )
        return (
            f"{self.rows} rows: {self.count('accepted')} accepted, "
            f"{self.count('duplicate', 'already')} already on the ledger (skipped), "
            f"{self.count('same_as_row')} repeat an earlier row, {len(self.refused)} refused"
        )


# -- reading ---------------------------------------------------------------------------------


def read_rows(path: Path, mapping: Mapping) -> list[Row]:
    """The data rows of a .csv or .xlsx file, keyed by header; raises MappingError when the
    file cannot be read or lacks a column the mapping names."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        header, rows = _xlsx(path, mapping.sheet)
    elif suffix in (".csv", ".txt"):
        header, rows = _csv(path, mapping.delimiter)
    else:
        raise MappingError(f"{path.name}: a .csv or .xlsx file is expected")
    twice = sorted({h for h in header if header.count(h) > 1} & mapping.columns)
    if twice:
        raise MappingError(f"{path.name} has the column(s) {twice} more than once: which one?")
    missing = sorted(mapping.columns - set(header))
    if missing:
        raise MappingError(
            f"{path.name} lacks the column(s) {missing} the mapping names; it has {header}"
        )
    return rows


def _csv(path: Path, delimiter: str) -> tuple[list[str], list[Row]]:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" export starts with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = [h.strip() for h in next(reader, [])]
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                rows.append(Row(reader.line_num, dict(zip(header, cells, strict=False))))
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise MappingError(f"{path.name} is not a UTF-8 CSV file: {exc}") from None
    return header, rows


def _xlsx(path: Path, sheet: str | None) -> tuple[list[str], list[Row]]:
    from openpyxl import load_workbook  # only for xlsx: CSV imports never load it

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from None
    except Exception as exc:
        raise MappingError(f"{path.name} is not an xlsx workbook: {type(exc).__name__}") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise MappingError(f"{path.name} has no sheet {sheet!r}; it has {book.sheetnames}")
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        lines = ws.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(lines, ())]
        rows = []
        for number, values in enumerate(lines, start=2):
            if all(_empty(v) for v in values):
                continue
            rows.append(Row(number, dict(zip(header, values, strict=False))))
        return header, rows
    finally:
        book.close()


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# -- drafts ------------------------------------------------------------------------------------


def draft_of(row: Row, mapping: Mapping) -> Draft:
    """The row as a record draft (raises RowError with every problem of the row)."""
    problems: list[Problem] = []
    record: dict[str, Any] = {}
    payload: dict[str, Any] = {}
    for part, template, where in (
        (record, mapping.record, "record"),
        (payload, mapping.payload, "payload"),
    ):
        try:
            part.update(fill(template, row.cells, mapping, where))
        except RowError as exc:
            problems.extend(exc.problems)
    if problems:
        raise RowError(problems)
    derived = _derived(mapping.kind, payload)
    draft: dict[str, Any] = {"kind": mapping.kind.value}
    for name in ("subject", "partNumber", "lotId", "eventTime", "quantity", "defects"):
        if name in record:
            draft[name] = record[name]
        elif name in derived:
            draft[name] = derived[name]
        else:
            problems.append(Problem(f"record.{name}", "not in the mapping's [record]"))
    if problems:
        raise RowError(problems)
    draft["payload"] = payload
    return draft  # type: ignore[return-value]  # all of Draft's fields are set above


def _derived(kind: RecordKind, payload: dict[str, Any]) -> dict[str, Any]:
    """Record fields the payload already states (the ledger requires them to agree, see
    ledger.records._check_counts), so a mapping need not give them twice."""

    def defect_sum(items: Any) -> int | None:
        counts = [d.get("count") for d in items] if isinstance(items, list) else []
        return sum(counts) if all(isinstance(c, int) for c in counts) else None

    out: dict[str, Any] = {}
    if kind is RecordKind.INSPECTION:
        out = {
            "quantity": payload.get("sampleSize"),
            "defects": defect_sum(payload.get("defectList", [])),
        }
    elif kind is RecordKind.DELIVERY:
        out = {"eventTime": payload.get("deliveredTime")}
    elif kind is RecordKind.AUDIT:
        major, minor = payload.get("majorNonconformities"), payload.get("minorNonconformities")
        if isinstance(major, int) and isinstance(minor, int):
            out = {"quantity": major + minor, "defects": major}
    elif kind is RecordKind.GOODS_RECEIPT:
        insp = payload.get("incomingInspection")
        found = defect_sum(insp.get("defectList", [])) if isinstance(insp, dict) else 0
        out = {
            "eventTime": payload.get("receivedTime"),
            "quantity": payload.get("quantity"),
            "defects": found,
        }
    elif kind is RecordKind.PART_SPEC:
        out = {"eventTime": payload.get("effectiveTime"), "lotId": payload.get("revision")}
    return {k: v for k, v in out.items() if v is not None}


def row_key(domain: Domain, signer_address: str, draft: Draft) -> bytes:
    """The row's identity on this ledger for this signer: what a re-run recognises."""
    return keccak(
        canonical_json(
            {"domain": domain.model_dump(), "signer": signer_address, "draft": dict(draft)}
        )
    )


def nonce_of(key: bytes) -> int:
    # 63 bits: below every store's signed 64-bit integer column.
    return int.from_bytes(key[:8], "big") >> 1


def salt_of(signer: Signer, key: bytes) -> str:
    secret = keccak(SALT_CONTEXT + signer.private_key)
    return "0x" + hmac.new(secret, key, hashlib.sha256).hexdigest()


# -- the state file ----------------------------------------------------------------------------


class StateFile:
    """Append-only JSON lines: ``sent`` before a batch goes out, the outcome after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, str | None] = {}  # key -> struct hash accepted
        self.sent: dict[str, list[str]] = {}  # key -> struct hashes sent, no answer seen
        self.damaged = 0
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    key, state = entry["key"], entry["state"]
                except (ValueError, KeyError, TypeError):
                    self.damaged += 1  # a line cut short when the process was killed
                    continue
                if state == "sent":
                    self.sent.setdefault(key, []).append(entry.get("structHash"))
                elif state in ("accepted", "duplicate", "already"):
                    self.done[key] = entry.get("structHash")

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for entry in entries:
                f.write(json.dumps(entry, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())


def default_state_path(source: Path) -> Path:
    return source.with_name(source.name + ".qledger-import.jsonl")


# -- the import --------------------------------------------------------------------------------


@dataclass
class _Planned:
    row: Row
    key: str
    draft: Draft


class Importer:
    """One import run. ``role``/``org`` (the signer's, from login) let the local checks refuse
    rows the service would refuse for the signer's role or organisation."""

    def __init__(
        self,
        client: QledgerClient,
        signer: Signer,
        domain: Domain,
        mapping: Mapping,
        state: StateFile,
        *,
        batch_size: int = DEFAULT_BATCH,
        role: str | None = None,
        org: str | None = None,
        max_event_age_seconds: int | None = None,
    ) -> None:
        if not 1 <= batch_size <= 1000:
            raise MappingError("batch size is 1..1000 (the service's max_batch_records)")
        self.client, self.signer, self.domain, self.mapping = client, signer, domain, mapping
        self.state, self.batch_size, self.role, self.org = state, batch_size, role, org
        self.max_age = max_event_age_seconds

    def plan(self, rows: list[Row], summary: Summary) -> list[_Planned]:
        """Every local check, row by row; the rows to send, in order."""
        planned: list[_Planned] = []
        first_row: dict[str, int] = {}
        for row in rows:
            summary.rows += 1
            try:
                draft = draft_of(row, self.mapping)
                self._check(draft)
            except RowError as exc:
                lines = [p.line(row.number) for p in exc.problems]
                summary.outcomes.append(RowOutcome(row.number, "refused", problems=lines))
                continue
            key = "0x" + row_key(self.domain, self.signer.address, draft).hex()
            if key in first_row:
                summary.outcomes.append(
                    RowOutcome(
                        row.number,
                        "same_as_row",
                        problems=[f"row {row.number}: the same record as row {first_row[key]}"],
                    )
                )
                continue
            first_row[key] = row.number
            if key in self.state.done:
                summary.outcomes.append(RowOutcome(row.number, "already", self.state.done[key]))
                continue
            planned.append(_Planned(row, key, draft))
        return planned

    def _check(self, draft: Draft) -> None:
        """What the service would refuse and the row alone shows: the record's schema and
        counts (by signing it), the signer's role and organisation, the event-time bound."""
        try:
            signed = sign_draft(self.signer, self.domain, {**draft, "nonce": 0})
        except ValidationError as exc:
            raise RowError([_problem_of(e) for e in exc.errors(include_url=False)]) from None
        except LedgerError as exc:
            raise RowError(
                [Problem("record", exc.message, expected=exc.expected, got=exc.got)]
            ) from None
        record = signed.record
        problems = []
        allowed = {role.value for role in KIND_SIGNER_ROLES[record.kind]}
        if self.role is not None and self.role not in allowed:
            problems.append(
                Problem(
                    "kind",
                    f"a {self.role} key may not sign {record.kind.value} records",
                    expected=allowed_roles_text(record.kind),
                    got=self.role,
                )
            )
        own_subject = self.role == Role.SUPPLIER.value or record.kind in SELF_SUBJECT_KINDS
        if own_subject and self.org is not None and record.subject != self.org:
            problems.append(
                Problem(
                    "record.subject",
                    "a supplier may only file evidence about itself",
                    expected=self.org,
                    got=record.subject,
                )
            )
        try:
            if self.max_age is not None:
                check_event_time(record, max_age_seconds=self.max_age)
            else:
                check_event_time(record)
        except LedgerError as exc:
            problems.append(
                Problem("record.eventTime", exc.message, expected=exc.expected, got=exc.got)
            )
        if problems:
            raise RowError(problems)

    def run(
        self,
        rows: list[Row],
        *,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> Summary:
        summary = Summary()
        if self.state.damaged:
            summary.warnings.append(
                f"{self.state.path.name}: {self.state.damaged} unreadable line(s) ignored "
                "(a run killed while writing)"
            )
        planned = self.plan(rows, summary)
        if progress is not None:
            progress(summary.rows - len(planned))
        if dry_run:
            summary.outcomes.extend(RowOutcome(p.row.number, "accepted") for p in planned)
            return summary
        for batch in _batches(planned, self.batch_size):
            outcomes = self._send(batch)
            summary.outcomes.extend(outcomes)
            if progress is not None:
                progress(len(batch))
        summary.outcomes.sort(key=lambda o: o.row)
        return summary

    def _send(self, batch: list[_Planned]) -> list[RowOutcome]:
        signed = [self._sign(p) for p in batch]
        self.state.append(
            {"key": p.key, "row": p.row.number, "state": "sent", "structHash": h}
            for p, (_, h) in zip(batch, signed, strict=True)
        )
        answer = self._post([s.model_dump(mode="json") for s, _ in signed])
        outcomes, entries = [], []
        for item in answer["results"]:
            planned = batch[item["index"]]
            struct_hash = item.get("structHash")
            status = item["status"]
            error = item.get("error") or {}
            if status == "rejected" and error.get("code") == "nonce_replayed":
                # This row's content nonce is taken: an earlier, killed run's record of it.
                earlier = self.state.sent.get(planned.key, [])
                status, struct_hash = "already", earlier[-1] if len(earlier) == 1 else None
            if status == "rejected":
                outcomes.append(
                    RowOutcome(planned.row.number, "refused", problems=[_refusal(planned, error)])
                )
                continue
            outcomes.append(RowOutcome(planned.row.number, status, struct_hash))
            entries.append(
                {"key": planned.key, "row": planned.row.number, "state": status,
                 "structHash": struct_hash}
            )  # fmt: skip
            self.state.done[planned.key] = struct_hash
        self.state.append(entries)
        return outcomes

    def _sign(self, planned: _Planned) -> tuple[SignedRecord, str]:
        key = bytes.fromhex(planned.key[2:])
        signed = sign_draft(
            self.signer,
            self.domain,
            {**planned.draft, "nonce": nonce_of(key)},
            salt=salt_of(self.signer, key),
        )
        return signed, "0x" + record_struct_hash(signed.record).hex()

    def _post(self, records: list[dict[str, Any]]) -> Any:
        """One batch, retried while the service says to wait (429/503 with Retry-After) or the
        connection drops; the state file makes a retry of an applied batch harmless."""
        for attempt in range(RETRIES):
            try:
                return self.client.submit_batch(records)
            except ServiceError as exc:
                if exc.status not in (429, 503) or attempt == RETRIES - 1:
                    raise
                time.sleep(min(exc.retry_after or 2**attempt, 30))
            except httpx.TransportError:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(2**attempt)
        raise AssertionError("unreachable")


def _batches(planned: list[_Planned], size: int) -> Iterator[list[_Planned]]:
    batch: list[_Planned] = []
    weight = 0
    for p in planned:
        # The payload dominates an envelope's size; 1 KiB covers the rest.
        cost = len(canonical_json(p.draft["payload"])) + 1024
        if batch and (len(batch) == size or weight + cost > MAX_BATCH_BYTES):
            yield batch
            batch, weight = [], 0
        batch.append(p)
        weight += cost
    if batch:
        yield batch


def _problem_of(error: Any) -> Problem:
    loc = ".".join(str(part) for part in error["loc"]) or "record"
    return Problem(f"record.{loc}", error["msg"], got=error.get("input"))


def _refusal(planned: _Planned, error: dict[str, Any]) -> str:
    text = f"row {planned.row.number}: refused by the service: {error.get('code', '?')}: "
    text += str(error.get("detail", ""))
    if error.get("expected") is not None or error.get("got") is not None:
        text += f"; expected {error.get('expected')}, got {error.get('got')!r}"
    return text
