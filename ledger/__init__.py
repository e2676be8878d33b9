"""qledger's ledger core: evidence records, EIP-712 signing, Merkle batches, chain client,
receipts and offline verification. Imports nothing else of qledger's.

Public surface:
- ``ledger.records``: ``SignedRecord``, ``QualityRecord``, ``Domain``, ``RecordKind``, ``Role``
- ``ledger.signing``: ``sign_record``, ``check_signature``
- ``ledger.keys``: ``Signer``, ``save_key``, ``load_key``
- ``ledger.merkle``: ``StandardMerkleTree``
- ``ledger.chain``: ``ChainClient``, ``Deployment``
- ``ledger.receipts``: ``Receipt``; ``ledger.verify``: ``verify_receipt``
- ``ledger.trust``: ``TrustRoot`` (the auditor's pinned chain, ledger and block)
- ``ledger.errors``: the typed errors
"""
