#!/usr/bin/env bash
# Nightly logical backup of a qledger deployment: the database (pg_dump, custom format), the
# deployment file, and the chain checkpoint at backup time (to check a restore against).
# It complements, not replaces, continuous WAL archiving (point-in-time recovery): records are
# the only copy of their payloads, and a nightly dump alone loses the day's records.
#
#   BACKUP_DIR=/srv/backups/qledger deploy/qledger/backup.sh
#
# Environment (defaults in brackets):
#   BACKUP_DIR          where dumps go                               [/var/backups/qledger]
#   PGHOST PGPORT PGUSER PGDATABASE PGPASSFILE PGSSLMODE ...  standard libpq variables
#                       [PGUSER=qledger_reader PGDATABASE=qledger: the read-only role suffices]
#   QLEDGER_DEPLOYMENT_FILE                                       [/var/lib/qledger/deployment.json]
#   QLEDGER_URL         the API, for GET /v1/checkpoint (optional) [unset: skipped]
#   CURL_CA_BUNDLE      CA of the API's certificate, if private
#   KEEP_DAYS           delete this script's backups older than this [35]
# Output: BACKUP_DIR/<UTC timestamp>/{qledger.dump, deployment.json, checkpoint.json,
# SHA256SUMS}. Copy BACKUP_DIR off the host (and encrypt it there): the dump holds every
# record's payload.
set -euo pipefail

backup_dir="${BACKUP_DIR:-/var/backups/qledger}"
deployment="${QLEDGER_DEPLOYMENT_FILE:-/var/lib/qledger/deployment.json}"
keep_days="${KEEP_DAYS:-35}"
export PGUSER="${PGUSER:-qledger_reader}" PGDATABASE="${PGDATABASE:-qledger}"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="$backup_dir/$stamp"
umask 077
mkdir -p "$target"
trap 'echo "backup FAILED, partial output in $target" >&2' ERR

# The checkpoint first: the dump then holds at least everything the checkpoint counts.
if [[ -n "${QLEDGER_URL:-}" ]]; then
  curl -fsS --max-time 30 "$QLEDGER_URL/v1/checkpoint" > "$target/checkpoint.json"
fi

# Custom format: compressed, restorable table by table, verifiable with pg_restore --list.
# --no-owner/--no-privileges: restore as whatever role owns the new database.
pg_dump --format=custom --compress=6 --no-owner --no-privileges \
  --file="$target/qledger.dump"
pg_restore --list "$target/qledger.dump" > /dev/null

if [[ -s "$deployment" ]]; then
  cp "$deployment" "$target/deployment.json"
else
  echo "warning: no deployment file at $deployment" >&2
fi

(cd "$target" && sha256sum -- * > SHA256SUMS)

# Retention: only directories this script made (UTC timestamps), only under backup_dir.
find "$backup_dir" -mindepth 1 -maxdepth 1 -type d -name '20??????T??????Z' \
  -mtime +"$keep_days" -exec rm -rf -- {} +

echo "$target"
