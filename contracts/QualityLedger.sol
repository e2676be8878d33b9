// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {
    ADMIN_ROLE_ID,
    ANCHORER_ROLE_ID,
    AUDITOR_ROLE_ID,
    OEM_ROLE_ID,
    ParticipantRoleRequiresRegistration,
    QLEDGER_CONTRACTS_VERSION,
    SUPPLIER_ROLE_ID,
    ZeroAddress,
    ZeroRoot
} from "./Common.sol";

/**
 * @title QualityLedger
 * @notice Anchors Merkle roots of signed supply-chain quality evidence and keeps the registry of
 * the participants allowed to sign it (suppliers, OEMs, auditors) with the full history of who
 * held which role when.
 *
 * Each batch of evidence records becomes one OpenZeppelin `StandardMerkleTree` whose leaves are the
 * records' EIP-712 struct hashes; only the root is stored, in one packed slot. Roots are chained
 * into an accumulator (`accumulator = keccak256(prevAccumulator, root)`), so a checkpoint
 * (batch count, accumulator) commits to the whole append-only history.
 *
 * Participant roles (SUPPLIER, OEM, AUDITOR) are granted and revoked only through
 * {registerParticipant} and {revokeParticipant}: the inherited {grantRole} and {revokeRole} refuse
 * them with {ParticipantRoleRequiresRegistration}, so an account holds at most one of them and
 * never one without an organisation. ADMIN and ANCHORER stay with plain AccessControl. A holder
 * may still {AccessControl-renounceRole} its own role (giving up a role breaks no invariant).
 *
 * Role history is kept for every role, whichever function changed it, so a verifier can ask
 * whether a signer held its role at the time a record was signed ({hadRoleAt}).
 */
contract QualityLedger is AccessControl {
    /// @notice Administers participants and roles (AccessControl's default admin role, 0x00).
    bytes32 public constant ADMIN_ROLE = ADMIN_ROLE_ID;
    /// @notice May anchor batches here and write to the ModelRegistry and CommitmentLog.
    bytes32 public constant ANCHORER_ROLE = ANCHORER_ROLE_ID;
    /// @notice May sign inspection, delivery and corrective-action records.
    bytes32 public constant SUPPLIER_ROLE = SUPPLIER_ROLE_ID;
    /// @notice May sign complaint records.
    bytes32 public constant OEM_ROLE = OEM_ROLE_ID;
    /// @notice May sign audit and improvement records.
    bytes32 public constant AUDITOR_ROLE = AUDITOR_ROLE_ID;

    /// @notice One period during which an account held a role (block timestamps).
    /// @dev `revokedAt == 0` means the role is still held. The interval is `[grantedAt, revokedAt)`.
    struct RoleInterval {
        uint64 grantedAt;
        uint64 revokedAt;
    }

    /// @dev One storage slot per anchored root (64 + 64 + 64 + 32 bits).
    struct Anchor {
        uint64 batchId;
        uint64 timestamp;
        uint64 blockNumber;
        uint32 leafCount;
    }

    /// @dev Batch counters share one slot so an anchor updates it with a single SSTORE.
    struct Counters {
        uint64 batchCount;
        uint64 leafTotal;
    }

    /// @notice The role is not one a participant can be registered with (ADMIN or unknown).
    error InvalidParticipantRole(bytes32 role);
    /// @notice The organisation id is empty.
    error EmptyOrgId();
    /// @notice The account is already registered to another organisation.
    error OrgMismatch(address account, string registeredOrgId, string requestedOrgId);
    /// @notice The account already holds another participant role; one account signs for one role.
    error ParticipantRoleConflict(address account, bytes32 heldRole);
    /// @notice The account already holds the role.
    error RoleAlreadyHeld(address account, bytes32 role);
    /// @notice The account does not hold the role.
    error RoleNotHeld(address account, bytes32 role);
    /// @notice A batch must contain at least one leaf.
    error ZeroLeafCount();
    /// @notice The root was already anchored in batch `batchId`.
    error RootAlreadyAnchored(bytes32 root, uint64 batchId);

    /// @notice Emitted when `account` is registered as a participant of organisation `orgId`.
    event ParticipantRegistered(address indexed account, bytes32 indexed role, string orgId);
    /// @notice Emitted when a participant's role is revoked through {revokeParticipant}.
    event ParticipantRevoked(address indexed account, bytes32 indexed role);
    /// @notice Emitted when a batch root is anchored; `accumulator` is the value after this batch.
    event BatchAnchored(
        uint64 indexed batchId, bytes32 indexed root, uint32 leafCount, bytes32 accumulator
    );

    mapping(bytes32 root => Anchor) private _anchors;
    Counters private _counters;
    bytes32 private _accumulator;

    mapping(address account => string) private _orgIds;
    mapping(bytes32 role => mapping(address account => RoleInterval[])) private _roleHistory;

    /**
     * @notice Deploys the ledger with `admin` as its only administrator.
     * @param admin The account that receives ADMIN_ROLE.
     */
    constructor(address admin) {
        // Ensure that the ledger has an administrator.
        if (admin == address(0)) {
            revert ZeroAddress();
        }
        _grantRole(ADMIN_ROLE, admin);
    }

    /**
     * @notice The version of the qledger contract set this ledger belongs to (semantic
     * versioning; see `QLEDGER_CONTRACTS_VERSION` in Common.sol).
     * @return The version string, e.g. "1.1.0".
     */
    function version() external pure returns (string memory) {
        return QLEDGER_CONTRACTS_VERSION;
    }

    // ---------------------------------------------------------------------------------------
    // Participants
    // ---------------------------------------------------------------------------------------

    /**
     * @notice Registers `account` as a participant of organisation `orgId` and grants it `role`.
     * @dev An account belongs to one organisation for life and holds at most one of the signing
     * roles (SUPPLIER, OEM, AUDITOR) at a time, so that no one can sign both sides of the evidence.
     * ANCHORER accounts can be registered too, to record which organisation operates them.
     * @param account The participant's signing address.
     * @param role The role to grant: SUPPLIER_ROLE, OEM_ROLE, AUDITOR_ROLE or ANCHORER_ROLE.
     * @param orgId The organisation id the account signs for (e.g. a supplier id).
     */
    function registerParticipant(address account, bytes32 role, string calldata orgId)
        external
        onlyRole(ADMIN_ROLE)
    {
        // Ensure that the account is a real address.
        if (account == address(0)) {
            revert ZeroAddress();
        }
        // Ensure that the role is one a participant can hold.
        if (!_isParticipantRole(role)) {
            revert InvalidParticipantRole(role);
        }
        // Ensure that the organisation id is not empty.
        if (bytes(orgId).length == 0) {
            revert EmptyOrgId();
        }
        // Ensure that the account does not hold the role already.
        if (hasRole(role, account)) {
            revert RoleAlreadyHeld(account, role);
        }
        // Ensure that the account does not hold another signing role.
        if (role != ANCHORER_ROLE) {
            bytes32 held = _heldSigningRole(account);
            if (held != bytes32(0)) {
                revert ParticipantRoleConflict(account, held);
            }
        }
        string storage registered = _orgIds[account];
        bool firstRegistration = bytes(registered).length == 0;
        // Ensure that the account stays with the organisation it was first registered to.
        if (!firstRegistration && keccak256(bytes(registered)) != keccak256(bytes(orgId))) {
            revert OrgMismatch(account, registered, orgId);
        }
        if (firstRegistration) {
            _orgIds[account] = orgId;
        }
        _grantRole(role, account);
        emit ParticipantRegistered(account, role, orgId);
    }

    /**
     * @notice Revokes `role` from the participant `account`. Its history and organisation remain.
     * @param account The participant's signing address.
     * @param role The participant role to revoke.
     */
    function revokeParticipant(address account, bytes32 role) external onlyRole(ADMIN_ROLE) {
        // Ensure that the role is one a participant can hold.
        if (!_isParticipantRole(role)) {
            revert InvalidParticipantRole(role);
        }
        // Ensure that the account holds the role.
        if (!_revokeRole(role, account)) {
            revert RoleNotHeld(account, role);
        }
        emit ParticipantRevoked(account, role);
    }

    /**
     * @notice Grants `role` to `account` (ADMIN or ANCHORER; participant roles only through
     * {registerParticipant}). A grant of a role already held changes nothing and emits nothing.
     * @dev Authorisation is checked first, so an outsider gets
     * {IAccessControl-AccessControlUnauthorizedAccount} whatever the role.
     * @param role The role id.
     * @param account The account to grant it to.
     */
    function grantRole(bytes32 role, address account) public override onlyRole(getRoleAdmin(role)) {
        // Ensure that participant roles keep registration's invariants (one role, an org).
        if (_isSigningRole(role)) {
            revert ParticipantRoleRequiresRegistration(role);
        }
        _grantRole(role, account);
    }

    /**
     * @notice Revokes `role` from `account` (ADMIN or ANCHORER; participant roles only through
     * {revokeParticipant}). Revoking a role not held changes nothing and emits nothing.
     * @param role The role id.
     * @param account The account to revoke it from.
     */
    function revokeRole(bytes32 role, address account)
        public
        override
        onlyRole(getRoleAdmin(role))
    {
        // Ensure that participant revocations go through revokeParticipant (one event trail).
        if (_isSigningRole(role)) {
            revert ParticipantRoleRequiresRegistration(role);
        }
        _revokeRole(role, account);
    }

    /**
     * @notice The organisation `account` was registered to, or "" if it never was.
     * @param account The participant's address.
     * @return The organisation id.
     */
    function orgOf(address account) external view returns (string memory) {
        return _orgIds[account];
    }

    /**
     * @notice Every period during which `account` held `role`, oldest first.
     * @param account The account.
     * @param role The role id.
     * @return The intervals `[grantedAt, revokedAt)`; `revokedAt == 0` while the role is held.
     */
    function roleHistory(address account, bytes32 role)
        external
        view
        returns (RoleInterval[] memory)
    {
        return _roleHistory[role][account];
    }

    /**
     * @notice Whether `account` held `role` at block timestamp `timestamp`.
     * @param role The role id.
     * @param account The account.
     * @param timestamp A unix timestamp (seconds).
     * @return True if some interval has `grantedAt <= timestamp < revokedAt` (or is still open).
     */
    function hadRoleAt(bytes32 role, address account, uint64 timestamp)
        external
        view
        returns (bool)
    {
        RoleInterval[] storage history = _roleHistory[role][account];
        for (uint256 i = history.length; i > 0; --i) {
            RoleInterval memory interval = history[i - 1];
            if (
                interval.grantedAt <= timestamp
                    && (interval.revokedAt == 0 || timestamp < interval.revokedAt)
            ) {
                return true;
            }
        }
        return false;
    }

    // ---------------------------------------------------------------------------------------
    // Anchoring
    // ---------------------------------------------------------------------------------------

    /**
     * @notice Anchors the root of a batch of `leafCount` evidence records.
     * @param root The OpenZeppelin StandardMerkleTree root of the records' struct hashes.
     * @param leafCount The number of records in the batch.
     * @return batchId The id of the new batch (ids start at 1).
     */
    function anchorBatch(bytes32 root, uint32 leafCount)
        external
        onlyRole(ANCHORER_ROLE)
        returns (uint64 batchId)
    {
        // Ensure that the root is set.
        if (root == bytes32(0)) {
            revert ZeroRoot();
        }
        // Ensure that the batch is not empty.
        if (leafCount == 0) {
            revert ZeroLeafCount();
        }
        Anchor storage anchor = _anchors[root];
        // Ensure that the root has not been anchored before.
        if (anchor.batchId != 0) {
            revert RootAlreadyAnchored(root, anchor.batchId);
        }

        Counters memory counters = _counters;
        unchecked {
            // A uint64 counter incremented once per transaction cannot overflow.
            batchId = counters.batchCount + 1;
            counters.leafTotal += leafCount;
        }
        counters.batchCount = batchId;
        _counters = counters;

        bytes32 accumulator = keccak256(abi.encodePacked(_accumulator, root));
        _accumulator = accumulator;

        _anchors[root] = Anchor({
            batchId: batchId,
            timestamp: uint64(block.timestamp),
            blockNumber: uint64(block.number),
            leafCount: leafCount
        });

        emit BatchAnchored(batchId, root, leafCount, accumulator);
    }

    /**
     * @notice When and in which batch `root` was anchored.
     * @param root A batch root.
     * @return batchId The batch id, or 0 if the root was never anchored.
     * @return timestamp The block timestamp of the anchoring transaction.
     * @return blockNumber The block number of the anchoring transaction.
     * @return leafCount The number of records in the batch.
     */
    function anchoredAt(bytes32 root)
        external
        view
        returns (uint64 batchId, uint64 timestamp, uint64 blockNumber, uint32 leafCount)
    {
        Anchor memory anchor = _anchors[root];
        return (anchor.batchId, anchor.timestamp, anchor.blockNumber, anchor.leafCount);
    }

    /**
     * @notice The current checkpoint of the append-only batch log.
     * @return batchCount The number of anchored batches.
     * @return accumulator The hash chain over every anchored root, in order.
     * @return leafTotal The number of records in all anchored batches.
     */
    function checkpoint()
        external
        view
        returns (uint64 batchCount, bytes32 accumulator, uint64 leafTotal)
    {
        Counters memory counters = _counters;
        return (counters.batchCount, _accumulator, counters.leafTotal);
    }

    /**
     * @notice Whether the record with EIP-712 struct hash `structHash` is in the anchored batch
     * `root`.
     * @param root An anchored batch root.
     * @param proof The record's StandardMerkleTree proof.
     * @param structHash The record's EIP-712 struct hash (the tree's value).
     * @return True if `root` is anchored and `proof` proves the leaf of `structHash` under it.
     */
    function verifyRecord(bytes32 root, bytes32[] calldata proof, bytes32 structHash)
        external
        view
        returns (bool)
    {
        return _anchors[root].batchId != 0
            && MerkleProof.verifyCalldata(proof, root, _leaf(structHash));
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// @dev Records the start of a role interval whenever a role is actually granted.
    function _grantRole(bytes32 role, address account) internal override returns (bool granted) {
        granted = super._grantRole(role, account);
        if (granted) {
            _roleHistory[role][account].push(
                RoleInterval({grantedAt: uint64(block.timestamp), revokedAt: 0})
            );
        }
    }

    /// @dev Closes the open role interval whenever a role is actually revoked (or renounced).
    function _revokeRole(bytes32 role, address account) internal override returns (bool revoked) {
        revoked = super._revokeRole(role, account);
        if (revoked) {
            RoleInterval[] storage history = _roleHistory[role][account];
            history[history.length - 1].revokedAt = uint64(block.timestamp);
        }
    }

    /// @dev The leaf of OpenZeppelin's StandardMerkleTree for the single value `bytes32 value`.
    function _leaf(bytes32 value) private pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(value))));
    }

    /// @dev Roles {registerParticipant} may grant: the signing roles and ANCHORER.
    function _isParticipantRole(bytes32 role) private pure returns (bool) {
        return _isSigningRole(role) || role == ANCHORER_ROLE;
    }

    /// @dev The roles that sign evidence: SUPPLIER, OEM and AUDITOR.
    function _isSigningRole(bytes32 role) private pure returns (bool) {
        return role == SUPPLIER_ROLE || role == OEM_ROLE || role == AUDITOR_ROLE;
    }

    /// @dev The signing role (SUPPLIER, OEM or AUDITOR) `account` holds, or zero if none.
    function _heldSigningRole(address account) private view returns (bytes32) {
        if (hasRole(SUPPLIER_ROLE, account)) {
            return SUPPLIER_ROLE;
        }
        if (hasRole(OEM_ROLE, account)) {
            return OEM_ROLE;
        }
        if (hasRole(AUDITOR_ROLE, account)) {
            return AUDITOR_ROLE;
        }
        return bytes32(0);
    }
}
