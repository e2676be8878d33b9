"""/docs and /redoc render in a real browser with the network beyond the service blocked
(issue #20, item 4: Swagger UI came from a CDN and stayed blank on a plant network).

A live service (uvicorn on a free port, in-process chain) and Debian's chromium driven by
playwright-core (tests/js/docs_offline.js), every request to another host aborted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from api.docs import ASSETS
from api.main import create_app
from tests.api.conftest import make_service

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = pytest.mark.slow


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (bash scripts/install_browser.sh)"
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (ROOT / "node_modules" / "playwright-core").is_dir():
        return "node_modules/playwright-core is missing (make install runs npm ci)"
    return None


@pytest.fixture
def live_url(tmp_path: Path) -> Iterator[str]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    service = make_service(tmp_path, "sqlite")
    config = uvicorn.Config(
        create_app(ctx=service.ctx), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        service.ctx.engine.dispose()


def test_docs_assets_are_installed() -> None:
    """make install provides every file the pages ask for (npm ci: swagger-ui-dist, redoc)."""
    missing = [str(path) for path, _ in ASSETS.values() if not path.is_file()]
    assert not missing, f"run make install: {missing}"


def test_swagger_and_redoc_render_with_the_internet_blocked(live_url: str) -> None:
    result = subprocess.run(
        ["node", str(ROOT / "tests" / "js" / "docs_offline.js"), live_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    try:
        summary = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = {}
    assert result.returncode == 0, f"{summary.get('error')}\n{result.stderr[-3000:]}"
    assert summary["blocked"] == [] and summary["cspViolations"] == []
    assert summary["swagger"]["operations"] >= 20 and summary["swagger"]["expanded"]
    assert summary["redoc"]["operations"] >= 20
