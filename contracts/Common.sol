// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/**
 * @title Common
 * @notice What QualityLedger, ModelRegistry and CommitmentLog share: the role ids, the version of
 * the contract set, and the custom errors more than one of them raises. Declared once here, at
 * file level (the manner of EAS's `Common.sol`), so the three contracts cannot drift apart.
 */

/// @dev The version of the contract set, answered by each contract's `version()`. Semantic
/// versioning: the major number changes with any ABI or storage change a client must know about.
/// 1.1.0: participant roles only through registration; `version()`; errors shared from here.
string constant QLEDGER_CONTRACTS_VERSION = "1.1.0";

/// @dev OpenZeppelin AccessControl's DEFAULT_ADMIN_ROLE (0x00): administers participants and roles.
bytes32 constant ADMIN_ROLE_ID = 0x00;
/// @dev May anchor batches on the ledger and write to the ModelRegistry and CommitmentLog.
bytes32 constant ANCHORER_ROLE_ID = keccak256("ANCHORER_ROLE");
/// @dev Signs inspection, delivery and corrective-action records.
bytes32 constant SUPPLIER_ROLE_ID = keccak256("SUPPLIER_ROLE");
/// @dev Signs complaint records.
bytes32 constant OEM_ROLE_ID = keccak256("OEM_ROLE");
/// @dev Signs audit and improvement records.
bytes32 constant AUDITOR_ROLE_ID = keccak256("AUDITOR_ROLE");

/// @notice An address argument (admin, account or ledger) is the zero address.
error ZeroAddress();
/// @notice A Merkle root must not be zero.
error ZeroRoot();
/// @notice A participant role (SUPPLIER, OEM, AUDITOR) can only be granted or revoked through
/// `registerParticipant` / `revokeParticipant`, which keep one organisation and one signing role
/// per account; the plain AccessControl `grantRole` / `revokeRole` refuse it.
error ParticipantRoleRequiresRegistration(bytes32 role);
