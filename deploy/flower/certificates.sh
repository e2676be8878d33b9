#!/usr/bin/env bash
# A private CA and the SuperLink's TLS server certificate (openssl), for Flower 1.41's
# deployment engine. The SuperLink serves its Fleet (SuperNodes), Control (flwr CLI) and
# Runtime (ServerApp/SuperExec) APIs on one HTTPS port with this certificate; every SuperNode
# and flwr CLI verifies it against ca.crt (--root-certificates / root-certificates).
#
#   deploy/flower/certificates.sh --out /etc/flower/tls \
#       --dns superlink.oem.example --ip 10.30.0.5 [--dns ... --ip ...] [--days 825]
#
# The certificate always also names localhost and 127.0.0.1: the SuperLink's own SuperExec
# connects to its Runtime API over loopback and checks the certificate too.
# Writes: ca.crt (distribute to SuperNodes and CLI users), ca.key (keep OFFLINE: it can mint
# certificates every SuperNode trusts), server.crt, server.key (SuperLink host only, 0600).
# Re-running with an existing ca.key issues a new server certificate from the same CA
# (renewal: SuperNodes need nothing new).
set -euo pipefail

out="" days=825 ca_days=3650
dns=() ips=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --dns) dns+=("$2"); shift 2 ;;
    --ip) ips+=("$2"); shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --ca-days) ca_days="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "--out is required" >&2; exit 2; }
[[ ${#dns[@]} -gt 0 || ${#ips[@]} -gt 0 ]] || {
  echo "give the SuperLink's --dns name(s) and/or --ip address(es) as SuperNodes dial it" >&2
  exit 2
}

umask 077
mkdir -p "$out"
cd "$out"

if [[ ! -f ca.key ]]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$ca_days" -out ca.crt \
    -subj "/O=qledger/CN=qledger Flower CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash"
  chmod 0644 ca.crt
  echo "new CA: $out/ca.crt (move ca.key offline after issuing)"
fi

san="DNS:localhost,IP:127.0.0.1"
for d in "${dns[@]}"; do san+=",DNS:$d"; done
for i in "${ips[@]}"; do san+=",IP:$i"; done
cn="${dns[0]:-${ips[0]}}"

openssl ecparam -name prime256v1 -genkey -noout -out server.key.new
openssl req -new -key server.key.new -out server.csr -subj "/O=qledger/CN=$cn"
cat > server.ext <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
  -days "$days" -extfile server.ext -out server.crt.new
rm -f server.csr server.ext
mv server.key.new server.key
mv server.crt.new server.crt
chmod 0600 server.key
chmod 0644 server.crt

openssl verify -CAfile ca.crt server.crt
openssl x509 -in server.crt -noout -subject -enddate -ext subjectAltName
