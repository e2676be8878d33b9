"""The transparency log core: RFC 6962 proofs against brute force, C2SP notes against the
spec's published examples and against sigstore's checkpoint parser (code nobody here wrote)."""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from ledger.tlog import (
    COSIGNATURE_V1,
    Checkpoint,
    LogError,
    LogTree,
    NoteFormatError,
    ProofError,
    Signer,
    Verifier,
    cosignature_time,
    leaf_hash,
    node_hash,
    note_signature_valid,
    open_checkpoint,
    parse_note,
    sign_checkpoint,
    verify_consistency,
    verify_inclusion,
)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, written straight from the definition (the brute-force reference)."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [leaf_hash(tag + i.to_bytes(4, "big")) for i in range(n)]


def test_roots_match_the_definition_for_every_size_up_to_70() -> None:
    all_leaves = leaves(70)
    tree = LogTree(all_leaves)
    for size in range(71):
        assert tree.root(size) == mth(all_leaves[:size])


def test_inclusion_proofs_for_every_leaf_of_many_sizes() -> None:
    all_leaves = leaves(40)
    tree = LogTree(all_leaves)
    for size in range(1, 41):
        root = mth(all_leaves[:size])
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            verify_inclusion(index, size, all_leaves[index], proof, root)
            # Another leaf, another index, a truncated or padded proof: all refused.
            with pytest.raises(ProofError) as other:
                verify_inclusion(index, size, leaf_hash(b"forged"), proof, root)
            assert other.value.code == "inclusion_proof"
            if size > 1:
                with pytest.raises(ProofError):
                    verify_inclusion((index + 1) % size, size, all_leaves[index], proof, root)
                with pytest.raises(ProofError):
                    verify_inclusion(index, size, all_leaves[index], proof[:-1], root)
            with pytest.raises(ProofError):
                verify_inclusion(index, size, all_leaves[index], [*proof, root], root)


def test_consistency_proofs_for_many_random_pairs_against_brute_force() -> None:
    rng = random.Random(6962)
    all_leaves = leaves(300)
    tree = LogTree(all_leaves)
    pairs = [(rng.randint(0, 300), rng.randint(0, 300)) for _ in range(400)]
    pairs += [(m, n) for m in range(1, 18) for n in range(m, 18)]
    for a, b in pairs:
        old, new = min(a, b), max(a, b)
        proof = tree.consistency_proof(old, new)
        verify_consistency(old, new, proof, mth(all_leaves[:old]), mth(all_leaves[:new]))


def test_a_history_that_does_not_extend_is_rejected() -> None:
    rng = random.Random(9162)
    honest = leaves(120)
    for _ in range(150):
        old = rng.randint(1, 119)
        new = rng.randint(old + 1, 120)
        # The log rewrites one entry before ``old``: the new tree does not extend the old one.
        rewritten = list(honest[:new])
        rewritten[rng.randrange(old)] = leaf_hash(b"rewritten")
        forked = LogTree(rewritten)
        proof = forked.consistency_proof(old, new)
        with pytest.raises(ProofError) as caught:
            verify_consistency(old, new, proof, mth(honest[:old]), mth(rewritten))
        assert caught.value.code == "consistency_proof"
        # The honest proof does not connect the honest old root to the forked new root either.
        with pytest.raises(ProofError):
            verify_consistency(
                old,
                new,
                LogTree(honest).consistency_proof(old, new),
                mth(honest[:old]),
                mth(rewritten),
            )
    # Two different roots at one size, and a shrinking log.
    with pytest.raises(ProofError, match="two different roots"):
        verify_consistency(5, 5, [], mth(honest[:5]), mth(leaves(5, b"x")))
    with pytest.raises(ProofError, match="smaller"):
        verify_consistency(6, 5, [], mth(honest[:6]), mth(honest[:5]))


# -- signed notes: the spec's own published examples --------------------------------------

# c2sp.org/signed-note "Verifier keys / Example" (C2SP/C2SP signed-note.md).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n"
    "\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3"
    "mFXmRKuwHjG1Yu72IneyaQM=\n"
)
# c2sp.org/tlog-cosignature: the example checkpoint with a log signature and a cosignature
# whose signed message is "cosignature/v1\ntime 1679315147\n...".
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u"
    "5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)


def test_spec_example_vkey_verifies_the_spec_example_note() -> None:
    verifier = Verifier.parse(SPEC_VKEY)
    assert verifier.vkey == SPEC_VKEY  # key id recomputed from name and key matches the spec
    note = parse_note(SPEC_NOTE)
    assert note.text == "This is an example message.\n"
    assert note.encode() == SPEC_NOTE
    (sig,) = note.signatures
    assert verifier.matches(sig) and note_signature_valid(verifier, note, sig)
    tampered = parse_note(SPEC_NOTE.replace("example message", "example massage"))
    assert not note_signature_valid(verifier, tampered, tampered.signatures[0])


def test_spec_example_cosigned_checkpoint_parses_with_its_timestamp() -> None:
    note = parse_note(SPEC_COSIGNED)
    checkpoint = Checkpoint.parse(note.text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.text() == note.text
    log_sig, cosig = note.signatures
    assert len(log_sig.signature) == 64
    assert cosig.name == "witness.example.com/w1"
    assert cosignature_time(cosig) == 1679315147  # the time line the spec's message shows
    assert note.encode() == SPEC_COSIGNED


@pytest.mark.parametrize(
    "bad",
    [
        "no blank line\n\u2014 a AAAAAAA=\n",
        "text\n\n",
        "text\n\n\u2014 a b+c AAAAAAA=\n",  # space in name
        "text\n\n\u2014 a AAAA\n",  # fewer than 5 bytes
        "text\n\n\u2014 a !!!!\n",  # not base64
        "text\n\n\u2014 a AAAAAAB=\n",  # non-canonical base64 (padding bits set)
        "text\x01\n\n\u2014 a AAAAAAA=\n",  # control character
        "text\n\n\u2014 a AAAAAAA=",  # no final newline
    ],
)
def test_malformed_notes_are_refused(bad: str) -> None:
    with pytest.raises(NoteFormatError) as caught:
        parse_note(bad)
    assert caught.value.code == "note_format"


@pytest.mark.parametrize(
    "text",
    [
        "origin\n007\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zeroes
        "origin\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # bad base64 padding
        "origin\n7\nAAAA\n",  # not 32 bytes
        "\n7\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # empty origin
        "origin\n7\n",  # too few lines
        "origin\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(NoteFormatError):
        Checkpoint.parse(text)


# -- our notes, read by sigstore's checkpoint code ----------------------------------------


def test_sigstore_parses_and_verifies_our_cosigned_checkpoint() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    from sigstore._internal.rekor.checkpoint import SignedCheckpoint as SigstoreCheckpoint
    from sigstore._internal.trust import Keyring
    from sigstore._utils import KeyID
    from sigstore_models.common.v1 import PublicKey, PublicKeyDetails

    origin = "qledger.local/31337/0x5fbdb2315678afecb367f032d93f642f64180aa3"
    log = Signer.generate(origin)
    witness = Signer.generate("witness.example/oem-7", COSIGNATURE_V1)
    tree = LogTree(leaves(13))
    checkpoint = Checkpoint(origin, 13, tree.root())
    note = sign_checkpoint(checkpoint, log)
    note = note.with_signatures([witness.cosign(note.text, 1_765_000_000)])
    text = note.encode()

    parsed = SigstoreCheckpoint.from_text(text)
    assert parsed.checkpoint.origin == origin
    assert parsed.checkpoint.log_size == 13
    assert parsed.checkpoint.log_hash == tree.root().hex()
    names = [s.name for s in parsed.signed_note.signatures]
    assert names == [origin, "witness.example/oem-7"]
    assert parsed.signed_note.signatures[0].sig_hash == log.verifier.key_id
    assert parsed.signed_note.signatures[1].sig_hash == witness.verifier.key_id

    der = Ed25519PublicKey.from_public_bytes(log.verifier.public_key).public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    keyring = Keyring(
        [PublicKey(raw_bytes=base64.b64encode(der), key_details=PublicKeyDetails.PKIX_ED25519)]
    )
    parsed.signed_note.verify(keyring, KeyID(log.verifier.key_id))  # raises if invalid

    # sigstore rejects what we reject: a changed body under the same signature.
    from sigstore.errors import VerificationError

    forged = SigstoreCheckpoint.from_text(text.replace("\n13\n", "\n14\n"))
    with pytest.raises(VerificationError):
        forged.signed_note.verify(keyring, KeyID(log.verifier.key_id))
    # The cosignature is 4 + 8 + 64 bytes as sigstore splits it (key id, then the rest).
    rest = base64.b64decode(parsed.signed_note.signatures[1].signature)
    assert len(rest) == 72 and int.from_bytes(rest[:8], "big") == 1_765_000_000


def test_open_checkpoint_checks_key_origin_and_quorum() -> None:
    origin = "qledger.local/1/0x" + "ab" * 20
    log = Signer.generate(origin)
    w1 = Signer.generate("w1.example", COSIGNATURE_V1)
    w2 = Signer.generate("w2.example", COSIGNATURE_V1)
    stranger = Signer.generate("w3.example", COSIGNATURE_V1)
    note = sign_checkpoint(Checkpoint(origin, 3, LogTree(leaves(3)).root()), log)
    cosigned = note.with_signatures([w1.cosign(note.text), stranger.cosign(note.text)]).encode()
    witnesses = [w1.verifier, w2.verifier]
    opened = open_checkpoint(cosigned, log.verifier, witnesses=witnesses, quorum=1)
    assert opened.cosigned_by == (w1.verifier.vkey,)
    with pytest.raises(LogError) as quorum:
        open_checkpoint(cosigned, log.verifier, witnesses=witnesses, quorum=2)
    assert quorum.value.code == "witness_quorum"
    # Another key with the log's name (a look-alike log) is ignored: no signature by *the* key.
    impostor = Signer.generate(origin)
    forged = sign_checkpoint(Checkpoint(origin, 3, leaf_hash(b"x")), impostor).encode()
    with pytest.raises(LogError) as unsigned:
        open_checkpoint(forged, log.verifier)
    assert unsigned.value.code == "checkpoint_signature"
    # A checkpoint of another ledger, validly signed by its own key, names the wrong origin.
    with pytest.raises(LogError) as other:
        open_checkpoint(note.encode(), log.verifier, origin="qledger.local/1/0x" + "cd" * 20)
    assert other.value.code == "log_origin"
    # A trusted witness's cosignature with a changed timestamp rejects the note.
    line = w1.cosign(note.text, 1000)
    bad = type(line)(line.name, line.key_id, (1001).to_bytes(8, "big") + line.signature[8:])
    with pytest.raises(LogError) as cosig:
        open_checkpoint(note.with_signatures([bad]).encode(), log.verifier, witnesses=witnesses)
    assert cosig.value.code == "cosignature"


def test_keys_round_trip_and_refuse_mismatched_ids() -> None:
    signer = Signer.generate("log.example/a")
    again = Signer.decode(signer.encode())
    assert again.verifier == signer.verifier
    assert "PRIVATE" not in repr(signer)
    vkey = signer.verifier.vkey
    assert Verifier.parse(vkey) == signer.verifier
    _name, key_id, material = vkey.split("+", 2)
    with pytest.raises(NoteFormatError):
        Verifier.parse(f"other.example+{key_id}+{material}")
    with pytest.raises(NoteFormatError):
        Verifier.parse(vkey, expect_type=COSIGNATURE_V1)


def test_inclusion_proofs_fold_with_sigstores_rfc6962_code() -> None:
    """sigstore's own inclusion-proof chaining (written for Rekor) accepts our proofs."""
    from sigstore._internal import merkle as sigstore_merkle

    data = [i.to_bytes(4, "big") * 3 for i in range(33)]
    tree = LogTree([leaf_hash(d) for d in data])
    assert sigstore_merkle._hash_leaf(data[5]) == leaf_hash(data[5])
    for size in range(1, 34):
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            inner, border = sigstore_merkle._decomp_inclusion_proof(index, size)
            assert len(proof) == inner + border
            seed = sigstore_merkle._chain_inner(leaf_hash(data[index]), proof[:inner], index)
            assert sigstore_merkle._chain_border_right(seed, proof[inner:]) == tree.root(size)
