"""EPCIS 2.0 interop (issue 19): signed records as GS1 EPCIS 2.0 events and back.

Pure data, used by the CLI (``qledger epcis``) and the API (``/v1/records/{hash}/epcis``);
the vendored GS1 JSON schema validates every document read or written (docs/epcis.md).
"""

from traceability.epcis.mapping import (
    CONTEXT,
    MAX_EVENTS,
    Companies,
    EpcisError,
    ImportedEvent,
    check_document,
    document,
    draft_nonce,
    export_document,
    import_document,
    lot_uri,
    parse_epc,
    record_event,
)
from traceability.epcis.schema import schema_errors

__all__ = [
    "CONTEXT",
    "MAX_EVENTS",
    "Companies",
    "EpcisError",
    "ImportedEvent",
    "check_document",
    "document",
    "draft_nonce",
    "export_document",
    "import_document",
    "lot_uri",
    "parse_epc",
    "record_event",
    "schema_errors",
]
