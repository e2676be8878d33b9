"""An MES integration job (docs/integrating-mes.md): sign one lot's final inspection with the
supplier's key, submit it, wait for its receipt and verify the receipt offline.

Needs only the light install (``pip install qledger``: the client and signing, no server).
Environment: QLEDGER_URL, QLEDGER_KEY_FILE (a V3 keystore), QLEDGER_KEY_PASSPHRASE, and
QLEDGER_LOG_KEY (the log's vkey, pinned once out of band: ``qledger log-key`` or the trust
file; without it this job reads it from the service, which proves less).
"""

from __future__ import annotations

import os
import sys
import time

from client import (
    Domain,
    Draft,
    QledgerClient,
    ServiceError,
    load_signer,
    sign_draft,
    verify_receipt_offline,
)
from ledger.tlog import Verifier


def final_inspection(mes_id: int, lot: str, bores: list[float], flash: int) -> Draft:
    """One lot's final inspection as the MES knows it. The nonce is the MES's own record id:
    a retry of the same record can then never be stored twice (the service refuses a reused
    (signer, nonce) with ``nonce_replayed``)."""
    return {
        "subject": "SUP-01",
        "kind": "inspection",
        "partNumber": "P-100",
        "lotId": lot,
        "eventTime": int(time.time()) - 600,
        "quantity": 50,  # the sample size
        "defects": flash,  # the sum of the defect counts
        "nonce": mes_id,
        "payload": {
            "inspectionType": "final",
            "disposition": "non_conformant" if flash else "conformant",
            "lotSize": 1000,
            "sampleSize": 50,
            "defectList": [{"code": "FLASH", "count": flash}],
            "sensorReport": [
                {"type": "bore_diameter", "uom": "MMT", "lsl": 9.95, "usl": 10.05, "key": True,
                 "values": bores}
            ],
        },
    }  # fmt: skip


def main() -> int:
    url = os.environ.get("QLEDGER_URL", "http://127.0.0.1:8700")
    signer = load_signer(
        os.environ["QLEDGER_KEY_FILE"], os.environ.get("QLEDGER_KEY_PASSPHRASE", "")
    )
    mes_id = int(os.environ.get("MES_RECORD_ID", time.time_ns() // 1000))
    with QledgerClient(url) as service:
        checkpoint = service.checkpoint()
        domain = Domain(chainId=checkpoint["chainId"], verifyingContract=checkpoint["contract"])
        draft = final_inspection(mes_id, f"LOT-{mes_id}", [10.001, 9.998, 10.004], flash=0)
        signed = sign_draft(signer, domain, draft)
        try:
            accepted = service.submit(signed.model_dump(mode="json"))
        except ServiceError as exc:  # an RFC 9457 problem: code, expected, got
            print(f"refused: {exc.code}: expected {exc.expected}, got {exc.got}", file=sys.stderr)
            return 1
        service.login(signer)  # reading receipts needs a token
        receipt = service.wait_receipt(accepted["structHash"], timeout=300)
        vkey = os.environ.get("QLEDGER_LOG_KEY") or service.get("/v1/log/key")["vkey"]
    report = verify_receipt_offline(signed, receipt, log_key=Verifier.parse(vkey))
    print(accepted["structHash"], "verified" if report.ok else "NOT VERIFIED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
