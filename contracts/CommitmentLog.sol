// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ANCHORER_ROLE_ID, QLEDGER_CONTRACTS_VERSION, ZeroAddress, ZeroRoot} from "./Common.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/**
 * @title CommitmentLog
 * @notice Anchors Merkle roots of published artefacts other than evidence records, such as
 * credit-score responses and responsibility matrices, so that a decision taken on them can be
 * audited later.
 * @dev A root commits to a StandardMerkleTree of `bytes32` value hashes under a topic
 * (e.g. `keccak256("credit-score")`). Writers must hold ANCHORER_ROLE on the QualityLedger.
 */
contract CommitmentLog {
    /// @notice The QualityLedger role allowed to commit.
    bytes32 public constant ANCHORER_ROLE = ANCHORER_ROLE_ID;

    /// @dev One storage slot per root (64 + 64 + 64 + 32 bits); the topic takes a second one.
    struct Commitment {
        uint64 seq;
        uint64 timestamp;
        uint64 blockNumber;
        uint32 count;
    }

    /// @notice The topic must not be zero.
    error ZeroTopic();
    /// @notice A commitment covers at least one value.
    error ZeroCount();
    /// @notice The root was already committed with sequence number `seq`.
    error AlreadyCommitted(bytes32 root, uint64 seq);

    /// @notice Emitted when `root` is committed under `topic` as the `seq`-th commitment.
    event Committed(bytes32 indexed topic, bytes32 indexed root, uint64 seq, uint32 count);

    /// @notice The QualityLedger whose ANCHORER_ROLE holders may commit.
    IAccessControl public immutable ledger;

    /// @notice The number of commitments so far (the last sequence number).
    uint64 public commitmentCount;

    mapping(bytes32 root => Commitment) private _commitments;
    mapping(bytes32 root => bytes32 topic) private _topics;

    /**
     * @notice The version of the qledger contract set (see `QLEDGER_CONTRACTS_VERSION`).
     * @return The version string, e.g. "1.1.0".
     */
    function version() external pure returns (string memory) {
        return QLEDGER_CONTRACTS_VERSION;
    }

    /**
     * @notice Deploys a log governed by the roles of `ledger_`.
     * @param ledger_ The QualityLedger contract.
     */
    constructor(address ledger_) {
        // Ensure that a ledger is given.
        if (ledger_ == address(0)) {
            revert ZeroAddress();
        }
        ledger = IAccessControl(ledger_);
    }

    /**
     * @notice Commits the Merkle root of `count` published values under `topic`.
     * @param topic What was published, e.g. `keccak256("credit-score")`.
     * @param root The StandardMerkleTree root of the values' hashes.
     * @param count The number of values.
     * @return seq The sequence number of this commitment (starting at 1).
     */
    function commit(bytes32 topic, bytes32 root, uint32 count) external returns (uint64 seq) {
        // Ensure that the caller may anchor on the ledger.
        if (!ledger.hasRole(ANCHORER_ROLE, msg.sender)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, ANCHORER_ROLE);
        }
        // Ensure that the topic is set.
        if (topic == bytes32(0)) {
            revert ZeroTopic();
        }
        // Ensure that the root is set.
        if (root == bytes32(0)) {
            revert ZeroRoot();
        }
        // Ensure that something is committed.
        if (count == 0) {
            revert ZeroCount();
        }
        Commitment storage existing = _commitments[root];
        // Ensure that the root has not been committed before.
        if (existing.seq != 0) {
            revert AlreadyCommitted(root, existing.seq);
        }
        unchecked {
            // A uint64 counter incremented once per transaction cannot overflow.
            seq = commitmentCount + 1;
        }
        commitmentCount = seq;
        _commitments[root] = Commitment({
            seq: seq,
            timestamp: uint64(block.timestamp),
            blockNumber: uint64(block.number),
            count: count
        });
        _topics[root] = topic;
        emit Committed(topic, root, seq, count);
    }

    /**
     * @notice When and under which topic `root` was committed.
     * @param root A committed root.
     * @return topic The topic, or zero if never committed.
     * @return seq The sequence number, or 0 if never committed.
     * @return timestamp The block timestamp of the commitment.
     * @return blockNumber The block number of the commitment.
     * @return count The number of values committed.
     */
    function committedAt(bytes32 root)
        external
        view
        returns (bytes32 topic, uint64 seq, uint64 timestamp, uint64 blockNumber, uint32 count)
    {
        Commitment memory c = _commitments[root];
        return (_topics[root], c.seq, c.timestamp, c.blockNumber, c.count);
    }

    /**
     * @notice Whether the value with hash `valueHash` is in the committed tree `root`.
     * @param root A committed root.
     * @param proof The value's StandardMerkleTree proof.
     * @param valueHash The value's hash (the tree's `bytes32` value).
     * @return True if `root` is committed and `proof` proves the leaf of `valueHash` under it.
     */
    function verifyCommitment(bytes32 root, bytes32[] calldata proof, bytes32 valueHash)
        external
        view
        returns (bool)
    {
        return _commitments[root].seq != 0
            && MerkleProof.verifyCalldata(
                proof, root, keccak256(bytes.concat(keccak256(abi.encode(valueHash))))
            );
    }
}
