"""Log set-up for the service's processes: plain text or one JSON object a line
(``QLEDGER_LOG_FORMAT=json``), with the configured secrets masked wherever they would appear.

The JSON lines carry ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and, for an
error, ``exc_type`` and ``exc`` (the exception's one-line message): never a traceback, whose
frames could show a decrypted key. Every line, text or JSON, passes through
:class:`SecretMask`, which replaces the values of the settings' secrets (the anchorer key, the
token secret, a key passphrase) with ``**********`` should any code ever format one into a
message.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from api.settings import Settings

MASK = "**********"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def _secret_values(settings: Settings) -> list[str]:
    values = []
    for secret in (settings.anchorer_key, settings.token_secret, settings.key_passphrase):
        if secret is not None and len(secret.get_secret_value()) >= 8:
            value = secret.get_secret_value()
            values.append(value)
            if value.startswith("0x"):
                values.append(value[2:])  # a hex key is also logged without its prefix
    # Longest first: a secret that contains another is masked whole.
    return sorted(set(values), key=len, reverse=True)


class SecretMask(logging.Filter):
    """Replace the configured secrets' values in a record's rendered message."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.mask(record.getMessage())
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line; an exception as its type and one-line message only."""

    def __init__(self, mask: SecretMask | None = None) -> None:
        super().__init__()
        self.secret_mask = mask

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = " ".join(str(exc).split())
            line["exc_type"] = type(exc).__name__
            line["exc"] = self.secret_mask.mask(text) if self.secret_mask else text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format; an exception's traceback as the stdlib prints it (file, line and
    code only, never local variables), masked like the message."""

    def __init__(self, mask: SecretMask | None = None) -> None:
        super().__init__(TEXT_FORMAT)
        self.secret_mask = mask

    def formatException(self, ei: Any) -> str:
        text = super().formatException(ei)
        return self.secret_mask.mask(text) if self.secret_mask else text


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Install one stderr handler on the root logger in the chosen format (replacing any
    handler installed before, so that a process configures once however it starts). uvicorn's
    loggers propagate here when it runs with ``log_config=None``."""
    mask = SecretMask(_secret_values(settings))
    handler = logging.StreamHandler()
    handler.addFilter(mask)
    handler.setFormatter(
        JsonFormatter(mask) if settings.log_format == "json" else TextFormatter(mask)
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
