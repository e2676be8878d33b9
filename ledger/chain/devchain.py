"""Controls only development chains have (eth-tester in process, anvil, hardhat): moving time."""

from __future__ import annotations

from web3.types import RPCEndpoint

from ledger.chain.transport import Transport, _translated


class DevChainControls(Transport):
    def advance_time(self, seconds: int) -> int:
        """Dev chains only: mine a block ``seconds`` after the latest one; returns its timestamp."""
        with _translated("advance time"):
            target = self.block_timestamp() + int(seconds)
            if self._tester is not None:
                self._tester.time_travel(target)
            else:
                self.w3.provider.make_request(RPCEndpoint("evm_setNextBlockTimestamp"), [target])
                self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])
            return self.block_timestamp()
