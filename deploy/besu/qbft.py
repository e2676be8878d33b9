#!/usr/bin/env python3
"""Network files for qledger's permissioned Besu/QBFT network, and a consistency check.

Run it with the qledger virtualenv (it needs keccak-256 from eth-hash and secp256k1 from
coincurve, both qledger dependencies):  .venv/bin/python deploy/besu/qbft.py --help

Subcommands (generate.sh chains them; each is usable on its own):

  extradata ADDR...    QBFT genesis extraData for these validators, the same bytes as
                       `besu rlp encode --type=QBFT_EXTRA_DATA` (addresses sorted ascending).
  decode HEX           the validator list inside a QBFT extraData string.
  prepare-config       qbftConfigFile.json with chainId/alloc for this network's accounts.
  keys-and-genesis     what `besu operator generate-blockchain-config` writes (keys/0xADDR/key,
                       key.pub, genesis.json with extraData), for hosts without Besu.
  layout               per-node bundles from those network files: node-N/{config.toml,
                       genesis.json, data/{key,key.pub,permissions_config.toml}}, the shared
                       permissions_config.toml and network.json (the public description).
  node-key             a new node key in a data dir, printing its address and enode (to add
                       a validator or member later).
  check DIR            every consistency rule between genesis, permissions, node configs and
                       keys (see check()); exit status 1 on any problem.

Key files use Besu's format: ``key`` holds the 32-byte secp256k1 private key as 0x-hex,
``key.pub`` the 64-byte uncompressed public key (X||Y) as 0x-hex. A node's address (its
validator id) is keccak256(pub)[12:]; its enode URL is enode://<pub hex>@<p2p host>:<p2p port>.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BFT_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
ADDRESS_RE = re.compile(r"^(0x)?[0-9a-fA-F]{40}$")
ENODE_RE = re.compile(r"^enode://([0-9a-f]{128})@([^:@/]+):(\d+)$")
# APIs a node may expose over HTTP JSON-RPC. ADMIN, DEBUG, TRACE, TXPOOL, MINER, PLUGINS are
# deliberately absent: nothing in qledger needs them and they widen what a caller can do.
VALIDATOR_APIS = ["ETH", "NET", "QBFT", "WEB3"]
MEMBER_APIS = ["ETH", "NET", "WEB3"]
ALLOWED_APIS = {"ETH", "NET", "QBFT", "WEB3", "PERM"}
DOCKER_SUBNET_PREFIX = "172.16.239."  # docker-compose.yml's network


# ---------------------------------------------------------------------------------------------
# Crypto (keccak-256, secp256k1) from qledger's dependencies
# ---------------------------------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    try:
        from eth_hash.auto import keccak
    except ImportError:  # pragma: no cover - only outside the qledger virtualenv
        sys.exit("qbft.py needs eth-hash (and coincurve): run it with qledger's .venv/bin/python")
    return bytes(keccak(data))


def new_private_key() -> bytes:
    try:
        from coincurve import PrivateKey
    except ImportError:  # pragma: no cover
        sys.exit("qbft.py needs coincurve to make keys: run it with qledger's .venv/bin/python")
    return PrivateKey().secret


def public_key(private: bytes) -> bytes:
    """64-byte uncompressed public key (no 0x04 prefix), as Besu's key.pub holds it."""
    from coincurve import PrivateKey

    return PrivateKey(private).public_key.format(compressed=False)[1:]


def address_of(pub: bytes) -> str:
    if len(pub) != 64:
        raise ValueError(f"public key must be 64 bytes, got {len(pub)}")
    return "0x" + keccak256(pub)[12:].hex()


def checksum(address: str) -> str:
    """EIP-55 mixed-case form (what qledger prints for keys)."""
    raw = normalize_address(address)[2:]
    digest = keccak256(raw.encode()).hex()[:40]
    upper = (c.upper() if int(d, 16) >= 8 else c for c, d in zip(raw, digest, strict=True))
    return "0x" + "".join(upper)


def normalize_address(address: str) -> str:
    if not ADDRESS_RE.match(address):
        raise ValueError(f"not an address: {address!r}")
    return "0x" + address.lower().removeprefix("0x")


def read_hex_file(path: Path, size: int) -> bytes:
    raw = bytes.fromhex(path.read_text().strip().removeprefix("0x"))
    if len(raw) != size:
        raise ValueError(f"{path}: expected {size} bytes, got {len(raw)}")
    return raw


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------------
# RLP and QBFT extraData
# ---------------------------------------------------------------------------------------------

RlpItem = bytes | list["RlpItem"]


def _prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def rlp_encode(item: RlpItem) -> bytes:
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _prefix(len(item), 0x80) + item
    payload = b"".join(rlp_encode(x) for x in item)
    return _prefix(len(payload), 0xC0) + payload


def _rlp_item(data: bytes, pos: int) -> tuple[RlpItem, int]:
    if pos >= len(data):
        raise ValueError("RLP: truncated")
    first = data[pos]
    if first < 0x80:
        return data[pos : pos + 1], pos + 1
    if first < 0xB8:
        start, length = pos + 1, first - 0x80
    elif first < 0xC0:
        n = first - 0xB7
        start, length = pos + 1 + n, int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
    elif first < 0xF8:
        start, length = pos + 1, first - 0xC0
    else:
        n = first - 0xF7
        start, length = pos + 1 + n, int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
    end = start + length
    if end > len(data):
        raise ValueError("RLP: length runs past the end")
    if first < 0xC0:
        return data[start:end], end
    items: list[RlpItem] = []
    cursor = start
    while cursor < end:
        item, cursor = _rlp_item(data, cursor)
        items.append(item)
    if cursor != end:
        raise ValueError("RLP: list length mismatch")
    return items, end


def rlp_decode(data: bytes) -> RlpItem:
    item, end = _rlp_item(data, 0)
    if end != len(data):
        raise ValueError("RLP: trailing bytes")
    return item


def qbft_extra_data(validators: list[str], *, sort: bool = True) -> str:
    """RLP([32 bytes vanity, [validators], no vote, round 0, no seals]) as 0x-hex.

    Besu's QBFT genesis format: the vote is an empty list, round 0 is the empty byte string
    (0x80), the seals an empty list. IBFT 2.0 differs (4-byte round, RLP-null vote).
    """
    addresses = [normalize_address(a) for a in validators]
    if len(set(addresses)) != len(addresses):
        raise ValueError("duplicate validator address")
    if sort:
        addresses.sort()
    item: RlpItem = [bytes(32), [bytes.fromhex(a[2:]) for a in addresses], [], b"", []]
    return "0x" + rlp_encode(item).hex()


def decode_qbft_extra_data(extra: str) -> list[str]:
    item = rlp_decode(bytes.fromhex(extra.removeprefix("0x")))
    if not (isinstance(item, list) and len(item) == 5):
        raise ValueError("QBFT extraData is a 5-item RLP list")
    vanity, validators, vote, round_, seals = item
    if not (isinstance(vanity, bytes) and len(vanity) == 32):
        raise ValueError("extraData vanity must be 32 bytes")
    if not isinstance(validators, list) or not all(
        isinstance(v, bytes) and len(v) == 20 for v in validators
    ):
        raise ValueError("extraData validators must be a list of 20-byte addresses")
    if vote != [] or round_ != b"" or seals != []:
        raise ValueError("a genesis extraData carries no vote, round 0 and no seals")
    return ["0x" + v.hex() for v in validators]


# ---------------------------------------------------------------------------------------------
# Network files
# ---------------------------------------------------------------------------------------------


def parse_accounts(values: list[str]) -> dict[str, str]:
    """``name=0xADDRESS`` pairs (e.g. deployer=0x..., fl-anchorer=0x...)."""
    accounts: dict[str, str] = {}
    for value in values:
        name, sep, address = value.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
            raise SystemExit(f"--account wants name=0xADDRESS (name: a-z 0-9 _ -), got {value!r}")
        accounts[name] = normalize_address(address)
    if not accounts:
        raise SystemExit("give at least one --account (the deployer: qledger's ADMIN + ANCHORER)")
    if len(set(accounts.values())) != len(accounts):
        raise SystemExit("two --account names share one address")
    return accounts


def prepare_config(
    template: dict[str, Any], accounts: dict[str, str], balance: str, chain_id: int | None
) -> dict[str, Any]:
    """The template's genesis with ``alloc`` = exactly these accounts (funded, see README)."""
    config = json.loads(json.dumps(template))
    genesis = config["genesis"]
    if chain_id is not None:
        genesis["config"]["chainId"] = chain_id
    genesis["alloc"] = {a[2:]: {"balance": balance} for a in accounts.values()}
    genesis.pop("extraData", None)
    return config


def keys_and_genesis(config: dict[str, Any], out: Path) -> None:
    """Equivalent of `besu operator generate-blockchain-config --private-key-file-name=key`."""
    nodes = config["blockchain"]["nodes"]
    if not nodes.get("generate", False):
        raise SystemExit("blockchain.nodes.generate must be true")
    count = int(nodes["count"])
    if count < 4:
        print(
            f"warning: {count} validators tolerate no faulty one (QBFT wants >= 4)", file=sys.stderr
        )
    addresses = []
    for _ in range(count):
        private = new_private_key()
        pub = public_key(private)
        address = address_of(pub)
        write_secret(out / "keys" / address / "key", "0x" + private.hex())
        (out / "keys" / address / "key.pub").write_text("0x" + pub.hex())
        addresses.append(address)
    genesis = dict(config["genesis"])
    genesis["extraData"] = qbft_extra_data(addresses)
    (out / "genesis.json").write_text(json.dumps(genesis, indent=2) + "\n")


def read_network_keys(keys_dir: Path) -> list[dict[str, Any]]:
    """[{address, pub, private_path}] from keys/0xADDR/{key,key.pub}."""
    found = []
    for directory in sorted(keys_dir.iterdir()):
        if not directory.is_dir():
            continue
        pub = read_hex_file(directory / "key.pub", 64)
        address = address_of(pub)
        if directory.name.lower() != address:
            raise SystemExit(f"{directory}: key.pub belongs to {address}")
        found.append({"address": address, "pub": pub, "private_path": directory / "key"})
    return sorted(found, key=lambda k: k["address"])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        if not value:
            return "[]"
        if sum(len(toml_value(v)) for v in value) < 60:
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        return "[\n" + "".join(f"  {toml_value(v)},\n" for v in value) + "]"
    raise TypeError(value)


def node_config(node: dict[str, Any], network: dict[str, Any], profile: str) -> str:
    """config.toml for one node (Besu reads option names without the leading --)."""
    name, role = node["name"], node["role"]
    others = [n["enode"] for n in network["validators"] + network["members"] if n["name"] != name]
    docker = profile == "docker"
    apis = VALIDATOR_APIS if role == "validator" else MEMBER_APIS
    rpc_host = "0.0.0.0" if docker else node["rpcHost"]
    allow = sorted({"localhost", "127.0.0.1", node["rpcHost"]} - {"0.0.0.0"})
    lines = [
        f"# Besu {role} {name} of the qledger QBFT network (chain id {network['chainId']}).",
        "# Generated by deploy/besu/generate.sh; regenerate rather than edit by hand.",
        f"# Profile: {profile}. Enode: {node['enode']}",
        "",
        "# Paths (same inside the container and on a host: see docker-compose.yml and",
        "# systemd/besu@.service). data-path holds key, permissions_config.toml and the database.",
        f"data-path={toml_value('/var/lib/besu/' + name)}",
        f"genesis-file={toml_value('/etc/besu/' + name + '/genesis.json')}",
        "",
        "# P2P: reachable by the other nodes only; the nodes allowlist admits exactly them.",
        f"p2p-host={toml_value(node['host'])}",
        f"p2p-port={node['p2pPort']}",
        'p2p-interface="0.0.0.0"',
        # In Docker the peers are on the compose network at fixed addresses and advertise
        # those; NAT detection would advertise something else (see README).
        'nat-method="NONE"',
        f"bootnodes={toml_value(others)}",
        "max-peers=25",
        "",
        "# Chain data: full sync from genesis (QBFT). BONSAI keeps recent state only; use",
        '# "FOREST" for an archive node if you need eth_call at old blocks (see README).',
        'sync-mode="FULL"',
        'data-storage-format="BONSAI"',
        "",
        "# Free gas: zeroBaseFee in the genesis plus a zero minimum gas price on EVERY node;",
        "# a node with a higher minimum silently drops zero-priced transactions.",
        "min-gas-price=0",
        "revert-reason-enabled=true",
        "",
        "# JSON-RPC over HTTP: internal only. "
        + (
            "0.0.0.0 inside the container; docker-compose.yml publishes the port on the host's "
            "127.0.0.1 only."
            if docker
            else "Bind to loopback (or the internal interface the qledger service uses)."
        ),
        "rpc-http-enabled=true",
        f"rpc-http-host={toml_value(rpc_host)}",
        f"rpc-http-port={node['rpcPort']}",
        f"rpc-http-api={toml_value(apis)}",
        '# Add "PERM" above only while an administrator edits allowlists at runtime',
        "# (perm_* methods), and remove it again; editing permissions_config.toml and",
        "# restarting the node needs no API at all.",
        f"host-allowlist={toml_value(allow)}",
        "rpc-ws-enabled=false",
        "graphql-http-enabled=false",
        "",
        "# Local permissioning: permissions_config.toml in data-path (Besu's default location",
        "# for both lists; the same file on every node).",
        "permissions-nodes-config-file-enabled=true",
        "permissions-accounts-config-file-enabled=true",
        "",
        "# Prometheus metrics, internal only.",
        "metrics-enabled=true",
        f"metrics-host={toml_value('0.0.0.0' if docker else '127.0.0.1')}",
        "metrics-port=9545",
        "",
    ]
    return "\n".join(lines)


def permissions_toml(network: dict[str, Any]) -> str:
    enodes = [n["enode"] for n in network["validators"] + network["members"]]
    names = {normalize_address(v): k for k, v in network["accounts"].items()}
    accounts = sorted(names)
    lines = [
        "# Local permissioning for the qledger QBFT network: the same file on every node, in",
        "# each node's data-path. Generated by deploy/besu/generate.sh.",
        "#",
        "# accounts-allowlist: the only accounts whose transactions these nodes accept.",
        "# Participants' keys (suppliers, OEMs, auditors) are NOT here: they sign EIP-712",
        "# records off chain and never send transactions. The contracts enforce roles",
        "# themselves (AccessControl); this list is defence in depth.",
    ]
    lines += [f"#   {checksum(a)}  {names[a]}" for a in accounts]
    # Lower case, as in Besu's documentation (the EIP-55 forms are in the comment above).
    lines += [f"accounts-allowlist={toml_value(accounts)}", ""]
    lines += [
        "# nodes-allowlist: every validator and member node (each node's bootnodes must be",
        "# listed here or Besu refuses to start).",
    ]
    lines += [
        f"#   {n['name']}: {n['address']}" for n in network["validators"] + network["members"]
    ]
    lines += [f"nodes-allowlist={toml_value(enodes)}", ""]
    return "\n".join(lines)


def layout(
    network_files: Path,
    out: Path,
    hosts: list[str],
    accounts: dict[str, str],
    profile: str,
    members: int,
    p2p_port: int,
    rpc_port: int,
    rpc_hosts: list[str] | None,
) -> dict[str, Any]:
    genesis = json.loads((network_files / "genesis.json").read_text())
    keys = read_network_keys(network_files / "keys")
    if len(hosts) != len(keys) + members:
        raise SystemExit(
            f"{len(keys)} validators + {members} members need "
            f"{len(keys) + members} --hosts, got {len(hosts)}"
        )
    if rpc_hosts is not None and len(rpc_hosts) != len(hosts):
        raise SystemExit("--rpc-hosts needs one entry per node")
    in_genesis = decode_qbft_extra_data(genesis["extraData"])
    if sorted(in_genesis) != sorted(k["address"] for k in keys):
        raise SystemExit("genesis extraData validators differ from the generated keys")
    if genesis["extraData"] != qbft_extra_data(in_genesis, sort=False):
        raise SystemExit("genesis extraData is not a QBFT genesis encoding of its validators")
    # node-1..N follow the order in extraData (Besu writes them in generation order).
    order = {address: i for i, address in enumerate(in_genesis)}
    keys.sort(key=lambda k: order[k["address"]])
    for _ in range(members):
        private = new_private_key()
        pub = public_key(private)
        address = address_of(pub)
        member_dir = network_files / "member-keys" / address
        write_secret(member_dir / "key", "0x" + private.hex())
        (member_dir / "key.pub").write_text("0x" + pub.hex())
        keys.append(
            {"address": address, "pub": pub, "private_path": member_dir / "key", "member": True}
        )
    # Two nodes on one host (tests, docker port mapping) must not share ports.
    same_host = len(set(hosts)) < len(hosts)
    nodes = []
    for i, (key, host) in enumerate(zip(keys, hosts, strict=True)):
        member = key.get("member", False)
        name = f"member-{i - len(keys) + members + 1}" if member else f"node-{i + 1}"
        port = p2p_port + (i if same_host else 0)
        rport = rpc_port + (i if same_host else 0)
        nodes.append(
            {
                "name": name,
                "role": "member" if member else "validator",
                "address": checksum(key["address"]),
                "host": host,
                "p2pPort": port,
                "rpcHost": (rpc_hosts[i] if rpc_hosts else "127.0.0.1"),
                "rpcPort": rport,
                "enode": f"enode://{key['pub'].hex()}@{host}:{port}",
                "_key": key,
            }
        )
    network = {
        "chainId": genesis["config"]["chainId"],
        "consensus": "qbft",
        "profile": profile,
        "genesisSha256": hashlib.sha256((network_files / "genesis.json").read_bytes()).hexdigest(),
        "validators": [n for n in nodes if n["role"] == "validator"],
        "members": [n for n in nodes if n["role"] == "member"],
        "accounts": {k: checksum(v) for k, v in accounts.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(network_files / "genesis.json", out / "genesis.json")
    perms = permissions_toml(network)
    (out / "permissions_config.toml").write_text(perms)
    for node in nodes:
        node_dir = out / node["name"]
        data = node_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        (node_dir / "config.toml").write_text(node_config(node, network, profile))
        shutil.copyfile(out / "genesis.json", node_dir / "genesis.json")
        (data / "permissions_config.toml").write_text(perms)
        key = node.pop("_key")
        write_secret(data / "key", key["private_path"].read_text().strip())
        (data / "key.pub").write_text("0x" + key["pub"].hex())
        os.chmod(data, 0o700)
    (out / "network.json").write_text(json.dumps(network, indent=2) + "\n")
    # The raw generator output holds every private key in one place: remove those copies.
    for directory in ("keys", "member-keys"):
        shutil.rmtree(network_files / directory, ignore_errors=True)
    return network


# ---------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------


def check(root: Path) -> list[str]:
    """Consistency of a network directory (the committed template or generate.sh's output).

    Returns the problems found (empty: consistent). What is checked:
    - genesis.json: QBFT block header selection (blockperiodseconds, epochlength,
      requesttimeoutseconds), chainId, London+zeroBaseFee, Shanghai and Cancun at genesis
      (qledger's contracts are compiled for cancun: PUSH0, MCOPY), BFT mixHash/difficulty,
      extraData a well-formed QBFT genesis encoding (vanity, validators, no vote, round 0,
      no seals) that re-encodes to the same bytes;
    - extraData validators == network.json validators == addresses of their enode keys;
    - permissions_config.toml: nodes-allowlist == every node's enode; accounts-allowlist ==
      network.json accounts, each funded in genesis alloc; alloc holds nothing else;
    - each node's config.toml: its own p2p host/port match its enode, bootnodes are the other
      nodes (so all are allowlisted), min-gas-price 0, permissioning on, RPC APIs within
      ETH/NET/QBFT/WEB3(/PERM), no wildcard host-allowlist, RPC bound to loopback/internal;
    - per-node copies of genesis.json / permissions_config.toml equal the shared ones; a
      private key, where present, is mode 0600 and matches the node's public key.
    """
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    try:
        genesis = json.loads((root / "genesis.json").read_text())
        network = json.loads((root / "network.json").read_text())
        perms = tomllib.loads((root / "permissions_config.toml").read_text())
    except (OSError, ValueError) as exc:
        return [f"cannot read the network files: {exc}"]

    cfg = genesis.get("config", {})
    qbft = cfg.get("qbft", {})
    for key in ("blockperiodseconds", "epochlength", "requesttimeoutseconds"):
        need(isinstance(qbft.get(key), int) and qbft[key] > 0, f"genesis config.qbft.{key}")
    need(
        qbft.get("requesttimeoutseconds", 0) >= 2 * qbft.get("blockperiodseconds", 1),
        "requesttimeoutseconds should be >= 2 x blockperiodseconds (Besu's tuning advice)",
    )
    need(
        "validatorcontractaddress" not in qbft,
        "this network uses block-header validator "
        "selection (qbft_proposeValidatorVote), not a validator contract",
    )
    need(cfg.get("chainId") == network.get("chainId"), "chainId differs genesis/network.json")
    need(
        cfg.get("londonBlock") == 0 and cfg.get("zeroBaseFee") is True,
        "free gas needs londonBlock 0 and zeroBaseFee true",
    )
    need(
        cfg.get("shanghaiTime") == 0 and cfg.get("cancunTime") == 0,
        "qledger's contracts need Shanghai (PUSH0) and Cancun (MCOPY) from genesis",
    )
    need(genesis.get("mixHash") == BFT_MIX_HASH, "mixHash must be the BFT constant")
    need(genesis.get("difficulty") == "0x1", "QBFT genesis difficulty is 0x1")
    try:
        in_extra = decode_qbft_extra_data(genesis.get("extraData", ""))
        need(
            genesis["extraData"] == qbft_extra_data(in_extra, sort=False),
            "extraData does not round-trip as a QBFT genesis encoding",
        )
    except ValueError as exc:
        in_extra = []
        problems.append(f"extraData: {exc}")

    validators = network.get("validators", [])
    members = network.get("members", [])
    nodes = validators + members
    need(len(validators) >= 4, "QBFT needs >= 4 validators to tolerate one faulty")
    need(
        sorted(normalize_address(v["address"]) for v in validators) == sorted(in_extra),
        "network.json validators differ from genesis extraData",
    )
    for node in nodes:
        m = ENODE_RE.match(node.get("enode", ""))
        if not m:
            problems.append(f"{node.get('name')}: bad enode {node.get('enode')!r}")
            continue
        pub = bytes.fromhex(m.group(1))
        need(
            address_of(pub) == normalize_address(node["address"]),
            f"{node['name']}: enode key is not address {node['address']}",
        )
        need(
            (m.group(2), int(m.group(3))) == (node["host"], node["p2pPort"]),
            f"{node['name']}: enode host/port differ from network.json",
        )
    need(
        set(perms.get("nodes-allowlist", [])) == {n["enode"] for n in nodes},
        "nodes-allowlist must list exactly every node's enode",
    )
    accounts = {normalize_address(a) for a in network.get("accounts", {}).values()}
    allow = {normalize_address(a) for a in perms.get("accounts-allowlist", [])}
    need(bool(accounts), "no accounts: the deployer (ADMIN + ANCHORER) must transact")
    need(allow == accounts, "accounts-allowlist must equal network.json accounts")
    alloc = {normalize_address(a): v for a, v in genesis.get("alloc", {}).items()}
    for account in accounts:
        balance = alloc.get(account, {}).get("balance", "0")
        need(int(str(balance), 0) > 0, f"{account} is not funded in genesis alloc")
    need(set(alloc) <= accounts, "genesis alloc funds accounts that may not transact")

    compose = root / "docker-compose.yml"
    if compose.exists():
        problems += check_compose(compose, nodes, network.get("profile") == "docker")

    genesis_bytes = (root / "genesis.json").read_bytes()
    perms_text = (root / "permissions_config.toml").read_text()
    enodes = {n["enode"] for n in nodes}
    for node in nodes:
        node_dir = root / node["name"]
        try:
            conf = tomllib.loads((node_dir / "config.toml").read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{node['name']}/config.toml: {exc}")
            continue
        where = f"{node['name']}/config.toml"
        need(
            conf.get("p2p-host") == node["host"] and conf.get("p2p-port") == node["p2pPort"],
            f"{where}: p2p-host/port differ from its enode",
        )
        need(
            set(conf.get("bootnodes", [])) == enodes - {node["enode"]},
            f"{where}: bootnodes must be the other nodes",
        )
        need(conf.get("min-gas-price") == 0, f"{where}: min-gas-price must be 0 (free gas)")
        need(
            conf.get("permissions-nodes-config-file-enabled") is True
            and conf.get("permissions-accounts-config-file-enabled") is True,
            f"{where}: node and account permissioning must be on",
        )
        need(
            "permissions-nodes-config-file" not in conf
            and "permissions-accounts-config-file" not in conf,
            f"{where}: keep permissions_config.toml at its default place in data-path",
        )
        apis = set(conf.get("rpc-http-api", []))
        need(
            apis <= ALLOWED_APIS,
            f"{where}: RPC APIs beyond {sorted(ALLOWED_APIS)}: {sorted(apis - ALLOWED_APIS)}",
        )
        need(
            node["role"] != "validator" or "QBFT" in apis,
            f"{where}: validators expose QBFT (validator votes) on their internal RPC",
        )
        need(
            node["role"] != "member" or "QBFT" not in apis,
            f"{where}: member (RPC) nodes do not expose QBFT",
        )
        hosts_allowed = conf.get("host-allowlist", [])
        need(
            "*" not in hosts_allowed and "all" not in hosts_allowed,
            f"{where}: host-allowlist must not be a wildcard",
        )
        need(
            conf.get("rpc-http-host") != "0.0.0.0" or network.get("profile") == "docker",
            f"{where}: rpc-http-host 0.0.0.0 only in the docker profile (port published "
            "on 127.0.0.1)",
        )
        need(
            conf.get("rpc-ws-enabled") is False and conf.get("graphql-http-enabled") is False,
            f"{where}: WebSocket and GraphQL stay off",
        )
        need(
            conf.get("data-path") == f"/var/lib/besu/{node['name']}"
            and conf.get("genesis-file") == f"/etc/besu/{node['name']}/genesis.json",
            f"{where}: data-path/genesis-file differ from the unit/compose layout",
        )
        copy = node_dir / "genesis.json"
        need(
            not copy.exists() or copy.read_bytes() == genesis_bytes,
            f"{node['name']}/genesis.json differs from genesis.json",
        )
        pcopy = node_dir / "data" / "permissions_config.toml"
        need(
            not pcopy.exists() or pcopy.read_text() == perms_text,
            f"{node['name']}/data/permissions_config.toml differs from the shared one",
        )
        key = node_dir / "data" / "key"
        if key.exists():
            need(key.stat().st_mode & 0o077 == 0, f"{key} must be readable by its owner only")
            try:
                derived = public_key(read_hex_file(key, 32))
                need(
                    "0x" + derived.hex() == "0x" + ENODE_RE.match(node["enode"]).group(1),
                    f"{key} does not match {node['name']}'s enode",
                )
            except (ValueError, ImportError) as exc:
                problems.append(f"{key}: {exc}")
    return problems


def check_compose(path: Path, nodes: list[dict[str, Any]], docker_profile: bool) -> list[str]:
    """docker-compose.yml mounts each node's files where its config.toml expects them, and
    (docker profile) gives each container the address its enode advertises."""
    try:
        import yaml
    except ImportError:  # pragma: no cover
        return ["docker-compose.yml: PyYAML missing (run with the qledger virtualenv)"]
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f"docker-compose.yml: {exc}"]
    problems = []
    services = doc.get("services", {})
    subnet = doc["networks"]["qbft"]["ipam"]["config"][0]["subnet"]
    for node in nodes:
        name = node["name"]
        svc = services.get(name)
        if svc is None:
            if node["role"] == "validator":
                problems.append(f"docker-compose.yml: no service {name}")
            continue
        want = {
            f"./{name}/config.toml:/etc/besu/{name}/config.toml:ro",
            f"./{name}/genesis.json:/etc/besu/{name}/genesis.json:ro",
            f"./{name}/data:/var/lib/besu/{name}",
        }
        if set(svc.get("volumes", [])) != want:
            problems.append(f"docker-compose.yml: {name} volumes differ from the node layout")
        if svc.get("command") != [f"--config-file=/etc/besu/{name}/config.toml"]:
            problems.append(f"docker-compose.yml: {name} command")
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"docker-compose.yml: {name} publishes {port} beyond loopback")
        ip = svc.get("networks", {}).get("qbft", {}).get("ipv4_address")
        if not (ip and ip.startswith(subnet.rsplit(".", 1)[0] + ".")):
            problems.append(f"docker-compose.yml: {name} address {ip} outside {subnet}")
        if docker_profile and ip != node["host"]:
            problems.append(
                f"docker-compose.yml: {name} runs at {ip}, its enode says {node['host']}"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("extradata", help="QBFT extraData for validator addresses")
    p.add_argument("addresses", nargs="+")
    p.add_argument("--keep-order", action="store_true", help="do not sort the addresses")
    p = sub.add_parser("decode", help="validators inside a QBFT extraData string")
    p.add_argument("extra_data")
    p = sub.add_parser("prepare-config", help="qbftConfigFile.json for this network")
    p.add_argument("--template", type=Path, default=HERE / "qbftConfigFile.json")
    p.add_argument("--account", action="append", default=[], metavar="NAME=0xADDRESS")
    p.add_argument(
        "--balance",
        default="0x33b2e3c9fd0803ce8000000",
        help="genesis balance of each account (default 1e27 wei; see README)",
    )
    p.add_argument("--chain-id", type=int)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("keys-and-genesis", help="node keys + genesis without Besu")
    p.add_argument("--config-file", type=Path, required=True)
    p.add_argument("--to", type=Path, required=True)
    p = sub.add_parser("layout", help="per-node bundles from network files")
    p.add_argument("--network-files", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--hosts",
        required=True,
        help="comma-separated p2p host per node (validators in address order, then members)",
    )
    p.add_argument(
        "--rpc-hosts", help="comma-separated RPC bind address per node (default 127.0.0.1 each)"
    )
    p.add_argument("--account", action="append", default=[], metavar="NAME=0xADDRESS")
    p.add_argument("--profile", choices=("systemd", "docker"), default="systemd")
    p.add_argument("--members", type=int, default=0, help="non-validator RPC nodes to add")
    p.add_argument("--p2p-port", type=int, default=30303)
    p.add_argument("--rpc-port", type=int, default=8545)
    p = sub.add_parser("node-key", help="a new node key in a data dir (to add a node later)")
    p.add_argument("--data-path", type=Path, required=True)
    p.add_argument("--host", required=True, help="the node's p2p host (for its enode URL)")
    p.add_argument("--p2p-port", type=int, default=30303)
    p = sub.add_parser("check", help="consistency of a network directory")
    p.add_argument("root", type=Path, nargs="?", default=HERE)
    args = parser.parse_args(argv)

    if args.cmd == "extradata":
        print(qbft_extra_data(args.addresses, sort=not args.keep_order))
    elif args.cmd == "decode":
        print(json.dumps(decode_qbft_extra_data(args.extra_data), indent=2))
    elif args.cmd == "prepare-config":
        template = json.loads(args.template.read_text())
        config = prepare_config(template, parse_accounts(args.account), args.balance, args.chain_id)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(config, indent=2) + "\n")
    elif args.cmd == "keys-and-genesis":
        if args.to.exists() and any(args.to.iterdir()):
            raise SystemExit(f"{args.to} is not empty")
        keys_and_genesis(json.loads(args.config_file.read_text()), args.to)
    elif args.cmd == "layout":
        hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
        rpc_hosts = [h.strip() for h in args.rpc_hosts.split(",")] if args.rpc_hosts else None
        network = layout(
            args.network_files,
            args.out,
            hosts,
            parse_accounts(args.account),
            args.profile,
            args.members,
            args.p2p_port,
            args.rpc_port,
            rpc_hosts,
        )
        for node in network["validators"] + network["members"]:
            print(f"{node['name']:9} {node['role']:9} {node['address']}  {node['enode']}")
    elif args.cmd == "node-key":
        key = args.data_path / "key"
        if key.exists():
            raise SystemExit(f"{key} exists; refusing to replace a node key")
        private = new_private_key()
        pub = public_key(private)
        write_secret(key, "0x" + private.hex())
        (args.data_path / "key.pub").write_text("0x" + pub.hex())
        print(
            json.dumps(
                {
                    "address": checksum(address_of(pub)),
                    "enode": f"enode://{pub.hex()}@{args.host}:{args.p2p_port}",
                },
                indent=2,
            )
        )
    elif args.cmd == "check":
        problems = check(args.root)
        for problem in problems:
            print(f"FAIL {problem}")
        if problems:
            return 1
        network = json.loads((args.root / "network.json").read_text())
        print(
            f"ok: {args.root} ({len(network['validators'])} validators, "
            f"{len(network['members'])} members, {len(network['accounts'])} accounts, "
            f"chain id {network['chainId']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
