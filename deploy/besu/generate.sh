#!/usr/bin/env bash
# Generate a qledger QBFT network: node keys, genesis (with extraData), permissions and one
# config bundle per node. See deploy/besu/README.md.
#
#   deploy/besu/generate.sh --out /secure/qbft-net \
#       --hosts 10.10.0.11,10.10.0.12,10.10.0.13,10.10.0.14 \
#       --account deployer=0xYourDeployerAddress
#
# Keys and genesis come from `besu operator generate-blockchain-config` (Besu on PATH, or the
# Docker image named by BESU_IMAGE); --without-besu makes the same files with qbft.py instead.
# Output (OUT):
#   network.json               public description: chain id, nodes, enodes, accounts
#   genesis.json               with extraData listing the validators
#   permissions_config.toml    nodes-allowlist (every enode) + accounts-allowlist
#   node-N/config.toml         -> /etc/besu/node-N/config.toml
#   node-N/genesis.json        -> /etc/besu/node-N/genesis.json
#   node-N/data/               -> /var/lib/besu/node-N/   (key = the node's PRIVATE key)
#   docker-compose.yml         (--profile docker only)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
qbft=("$python" "$here/qbft.py")

out="" hosts="" rpc_hosts="" profile="systemd" members=0 chain_id="" besu_mode="auto"
accounts=()

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  cat <<'EOF'
Options:
  --out DIR            output directory (must not exist or be empty)       [required]
  --account NAME=ADDR  an account allowed to transact, funded in genesis; repeat  [>= 1]
                       (deployer=0x...: the service key, becomes ADMIN + ANCHORER;
                        fl-anchorer=0x...: optional key anchoring FL rounds)
  --hosts H1,H2,...    p2p host (IP) of each node: validators, then members
                       [required for systemd; docker default 172.16.239.11...]
  --rpc-hosts H1,...   RPC bind address per node (default 127.0.0.1)
  --profile P          systemd (default) | docker
  --members N          add N non-validator RPC nodes (the service's RPC endpoint)
  --chain-id N         override qbftConfigFile.json's chainId
  --without-besu       generate keys + genesis with qbft.py instead of Besu
Environment: PYTHON (qledger venv python), BESU (besu binary), BESU_IMAGE (docker image).
EOF
}

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --hosts) hosts="$2"; shift 2 ;;
    --rpc-hosts) rpc_hosts="$2"; shift 2 ;;
    --account) accounts+=("$2"); shift 2 ;;
    --profile) profile="$2"; shift 2 ;;
    --members) members="$2"; shift 2 ;;
    --chain-id) chain_id="$2"; shift 2 ;;
    --without-besu) besu_mode="none"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "error: $*" >&2; exit 1; }
[[ -n "$out" ]] || die "--out is required"
[[ ${#accounts[@]} -ge 1 ]] || die "at least one --account NAME=0xADDRESS (the deployer)"
[[ "$profile" == systemd || "$profile" == docker ]] || die "--profile is systemd or docker"
[[ -x "$python" ]] || die "no python at $python (make install, or set PYTHON)"
if [[ -e "$out" && -n "$(ls -A "$out" 2>/dev/null)" ]]; then
  die "$out exists and is not empty; refusing to overwrite a network (its keys!)"
fi

validators="$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["blockchain"]["nodes"]["count"])' "$here/qbftConfigFile.json")"
total=$((validators + members))
if [[ -z "$hosts" ]]; then
  [[ "$profile" == docker ]] || die "--hosts is required (one p2p IP per node, $total in all)"
  list=()
  for ((i = 1; i <= validators; i++)); do list+=("172.16.239.$((10 + i))"); done
  for ((i = 1; i <= members; i++)); do list+=("172.16.239.$((20 + i))"); done
  hosts="$(IFS=,; echo "${list[*]}")"
fi

besu_bin="${BESU:-$(command -v besu || true)}"
if [[ "$besu_mode" == auto ]]; then
  if [[ -n "$besu_bin" ]]; then besu_mode="binary"
  elif [[ -n "${BESU_IMAGE:-}" ]] && command -v docker >/dev/null; then besu_mode="docker"
  else die "no besu on PATH and no BESU_IMAGE for docker; install Besu or pass --without-besu"
  fi
fi

umask 077
mkdir -p "$out"
out="$(cd "$out" && pwd)"

account_args=()
for a in "${accounts[@]}"; do account_args+=(--account "$a"); done

echo "==> network configuration ($out/qbftConfigFile.json)"
"${qbft[@]}" prepare-config --template "$here/qbftConfigFile.json" --out "$out/qbftConfigFile.json" \
  "${account_args[@]}" ${chain_id:+--chain-id "$chain_id"}

echo "==> node keys and genesis ($besu_mode)"
case "$besu_mode" in
  binary)
    "$besu_bin" operator generate-blockchain-config --config-file="$out/qbftConfigFile.json" \
      --to="$out/networkFiles" --private-key-file-name=key ;;
  docker)
    docker run --rm -u "$(id -u):$(id -g)" -v "$out:/out" "$BESU_IMAGE" \
      operator generate-blockchain-config --config-file=/out/qbftConfigFile.json \
      --to=/out/networkFiles --private-key-file-name=key ;;
  none)
    "${qbft[@]}" keys-and-genesis --config-file "$out/qbftConfigFile.json" --to "$out/networkFiles" ;;
esac
[[ -s "$out/networkFiles/genesis.json" ]] || die "no genesis.json was generated"

echo "==> per-node bundles ($profile)"
"${qbft[@]}" layout --network-files "$out/networkFiles" --out "$out" --hosts "$hosts" \
  --profile "$profile" --members "$members" "${account_args[@]}" \
  ${rpc_hosts:+--rpc-hosts "$rpc_hosts"}

if [[ "$profile" == docker ]]; then
  cp "$here/docker-compose.yml" "$out/docker-compose.yml"
fi

echo "==> consistency check"
"${qbft[@]}" check "$out"

cat <<EOF

Done. $out/node-N/data/key are the nodes' PRIVATE keys: copy each node's bundle to its host
only (config.toml + genesis.json -> /etc/besu/node-N/, data/ -> /var/lib/besu/node-N/, owner
besu, mode 0700/0600), keep an offline backup, and never commit them. genesis.json,
permissions_config.toml and network.json are public and belong under version control.
Next: deploy/besu/README.md, "Start the validators".
EOF
