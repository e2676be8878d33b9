// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {ANCHORER_ROLE_ID, QLEDGER_CONTRACTS_VERSION, ZeroAddress} from "./Common.sol";

/**
 * @title ModelRegistry
 * @notice Provenance of federated-learning runs: for every round of a run, the hash of the
 * aggregated global model, how many participants contributed and the Merkle root of who they were.
 * @dev Writers must hold ANCHORER_ROLE on the QualityLedger this registry was deployed for; the
 * ledger is the single place where roles are administered.
 */
contract ModelRegistry {
    /// @notice The QualityLedger role allowed to record rounds.
    bytes32 public constant ANCHORER_ROLE = ANCHORER_ROLE_ID;

    /// @dev Two slots per round.
    struct Round {
        bytes32 modelHash;
        bytes32 participantsRoot;
        uint32 participants;
        uint64 timestamp;
    }

    /// @dev One slot per run.
    struct Run {
        uint32 latestRound;
        uint32 roundCount;
    }

    /// @notice The run id must not be zero.
    error ZeroRunId();
    /// @notice The model hash must not be zero.
    error ZeroModelHash();
    /// @notice The participants root must not be zero.
    error ZeroParticipantsRoot();
    /// @notice A round needs at least one participant.
    error NoParticipants();
    /// @notice Rounds of a run must be recorded in strictly increasing order, each once.
    error RoundNotIncreasing(bytes32 runId, uint32 round, uint32 latestRound);

    /// @notice Emitted when the global model of `round` of run `runId` is recorded.
    event ModelRoundRecorded(
        bytes32 indexed runId,
        uint32 indexed round,
        bytes32 modelHash,
        uint32 participants,
        bytes32 participantsRoot
    );

    /// @notice The QualityLedger whose ANCHORER_ROLE holders may write here.
    IAccessControl public immutable ledger;

    mapping(bytes32 runId => Run) private _runs;
    mapping(bytes32 runId => mapping(uint32 round => Round)) private _rounds;

    /**
     * @notice The version of the qledger contract set (see `QLEDGER_CONTRACTS_VERSION`).
     * @return The version string, e.g. "1.1.0".
     */
    function version() external pure returns (string memory) {
        return QLEDGER_CONTRACTS_VERSION;
    }

    /**
     * @notice Deploys a registry governed by the roles of `ledger_`.
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
     * @notice Records the aggregated global model of one round of a federated-learning run.
     * @dev The first recorded round of a run may be any number (0 for the initial model);
     * each later one must be greater than the previous.
     * @param runId The run id (e.g. keccak256 of the run's name).
     * @param round The round number.
     * @param modelHash The hash of the serialized global model after the round.
     * @param participants The number of clients whose updates were aggregated.
     * @param participantsRoot The Merkle root of the participating clients.
     */
    function recordRound(
        bytes32 runId,
        uint32 round,
        bytes32 modelHash,
        uint32 participants,
        bytes32 participantsRoot
    ) external {
        // Ensure that the caller may anchor on the ledger.
        if (!ledger.hasRole(ANCHORER_ROLE, msg.sender)) {
            revert IAccessControl.AccessControlUnauthorizedAccount(msg.sender, ANCHORER_ROLE);
        }
        // Ensure that the run id is set.
        if (runId == bytes32(0)) {
            revert ZeroRunId();
        }
        // Ensure that the model hash is set.
        if (modelHash == bytes32(0)) {
            revert ZeroModelHash();
        }
        // Ensure that someone took part in the round.
        if (participants == 0) {
            revert NoParticipants();
        }
        // Ensure that the participants are committed to.
        if (participantsRoot == bytes32(0)) {
            revert ZeroParticipantsRoot();
        }
        Run memory run = _runs[runId];
        // Ensure that rounds only move forward.
        if (run.roundCount != 0 && round <= run.latestRound) {
            revert RoundNotIncreasing(runId, round, run.latestRound);
        }
        unchecked {
            // At most one increment per round number, so it cannot exceed 2**32 - 1 + 1 rounds.
            run.roundCount += 1;
        }
        run.latestRound = round;
        _runs[runId] = run;
        _rounds[runId][round] = Round({
            modelHash: modelHash,
            participantsRoot: participantsRoot,
            participants: participants,
            timestamp: uint64(block.timestamp)
        });
        emit ModelRoundRecorded(runId, round, modelHash, participants, participantsRoot);
    }

    /**
     * @notice The recorded global model of `round` of run `runId`.
     * @param runId The run id.
     * @param round The round number.
     * @return modelHash The model hash, or zero if the round was not recorded.
     * @return participants The number of participants.
     * @return participantsRoot The Merkle root of the participants.
     * @return timestamp The block timestamp of the recording, or 0 if not recorded.
     */
    function roundOf(bytes32 runId, uint32 round)
        external
        view
        returns (bytes32 modelHash, uint32 participants, bytes32 participantsRoot, uint64 timestamp)
    {
        Round memory r = _rounds[runId][round];
        return (r.modelHash, r.participants, r.participantsRoot, r.timestamp);
    }

    /**
     * @notice The highest round recorded for run `runId` (0 if none; see {roundCount}).
     * @param runId The run id.
     * @return The latest round number.
     */
    function latestRound(bytes32 runId) external view returns (uint32) {
        return _runs[runId].latestRound;
    }

    /**
     * @notice How many rounds were recorded for run `runId`.
     * @param runId The run id.
     * @return The number of recorded rounds.
     */
    function roundCount(bytes32 runId) external view returns (uint32) {
        return _runs[runId].roundCount;
    }
}
