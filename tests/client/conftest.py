"""A live service on a real port (uvicorn in a thread, in-process chain) for the importer, the
CLI in a subprocess and the light-install client, with an anchorer that keeps anchoring."""

from __future__ import annotations

import csv
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from openpyxl import load_workbook
from sqlalchemy import func, select

from api.anchorer import Anchorer
from api.store.models import Record
from tests.api.conftest import Party, Service, make_service
from tests.helpers import ROOT

EXAMPLES = ROOT / "docs" / "examples"
MAPPING = EXAMPLES / "inspection-mapping.toml"


@dataclass
class Live:
    """The module's live service, seen by one test: its records are the lots named with the
    test's own ``prefix`` (the service is shared by the module: starting one costs seconds)."""

    service: Service
    url: str
    prefix: str = "LOT"

    def party(self, name: str) -> Party:
        return self.service.parties[name]

    def key_file(self, name: str, directory: Path) -> Path:
        """The party's key as a plain dev key file (what `qledger keys new --plain` writes)."""
        path = directory / f"{name}.json"
        path.write_text(
            json.dumps({"private_key": "0x" + self.party(name).signer.private_key.hex()})
        )
        return path

    def stored(self) -> list[Record]:
        """This test's records (lots named with its prefix)."""
        with self.service.ctx.sessions() as s:
            mine = select(Record).where(Record.lot_id.startswith(self.prefix + "-"))
            return list(s.scalars(mine))

    def count(self) -> int:
        return len(self.stored())

    def count_all(self) -> int:
        with self.service.ctx.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Record)) or 0)

    def anchor(self) -> None:
        Anchorer(self.service.ctx).run_once(force=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    service = make_service(tmp_path_factory.mktemp("live"), "sqlite")
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(service.client.app, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield Live(service, f"http://127.0.0.1:{port}")
    server.should_exit = True
    thread.join(10)
    service.ctx.engine.dispose()


_tests = itertools.count(1)


@pytest.fixture
def live(live_service: Live) -> Live:
    return Live(live_service.service, live_service.url, prefix=f"T{next(_tests):03d}")


# One base per test run, so the CSV and the xlsx copies of the sample hold the same times.
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)


def recent(i: int) -> datetime:
    """Row i's inspection time (naive, as the MES writes it): recent (the ledger bounds
    eventTime to 30 days before signing) and in the past whatever the mapping's timezone."""
    return BASE - timedelta(hours=30 - 2 * i)


def sample_csv(directory: Path, prefix: str) -> Path:
    """docs/examples/inspection-lots.csv with its inspection times moved to recent ones and its
    lots named with ``prefix`` (LOT-2026-4711 -> PREFIX-4711)."""
    with (EXAMPLES / "inspection-lots.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    column, lot = rows[0].index("Inspected at"), rows[0].index("Lot")
    for i, row in enumerate(rows[1:]):
        row[column] = recent(i).isoformat()
        row[lot] = row[lot].replace("LOT-2026", prefix)
    path = directory / "inspection-lots.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def sample_xlsx(directory: Path, prefix: str) -> Path:
    """docs/examples/inspection-lots.xlsx with its (datetime) inspection cells and its lots
    changed likewise."""
    book = load_workbook(EXAMPLES / "inspection-lots.xlsx")
    sheet = book["Lots"]
    header = [c.value for c in sheet[1]]
    column, lot = header.index("Inspected at") + 1, header.index("Lot") + 1
    for i in range(2, sheet.max_row + 1):
        sheet.cell(row=i, column=column).value = recent(i - 2)
        cell = sheet.cell(row=i, column=lot)
        cell.value = str(cell.value).replace("LOT-2026", prefix)
    path = directory / "inspection-lots.xlsx"
    book.save(path)
    return path
