#!/usr/bin/env bash
# Static checks of everything under deploy/: files parse, scripts are syntactically valid, the
# Besu network files are consistent, units verify where systemd-analyze exists. Runs in seconds,
# starts nothing. Use after editing any of these files or regenerating the Besu network:
#
#   deploy/validate.sh                    # the committed files
#   deploy/validate.sh /secure/qbft-net   # also a generated network directory
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
failed=0
ok() { printf '  ok    %s\n' "$*"; }
bad() { printf '  FAIL  %s\n' "$*"; failed=1; }

echo "== JSON / TOML / YAML parse"
"$python" - "$here" <<'EOF' || failed=1
import json, sys, tomllib, pathlib, yaml
root = pathlib.Path(sys.argv[1]); bad = 0
for p in sorted(root.rglob("*")):
    if not p.is_file():
        continue
    name = p.name
    try:
        if name.endswith(".json"):
            json.loads(p.read_text())
        elif name.endswith(".toml") or name.endswith(".toml.example"):
            tomllib.loads(p.read_text())
        elif name.endswith((".yml", ".yaml")):
            yaml.safe_load(p.read_text())
        else:
            continue
        print(f"  ok    {p.relative_to(root)}")
    except Exception as exc:
        print(f"  FAIL  {p.relative_to(root)}: {exc}"); bad = 1
sys.exit(bad)
EOF

echo "== shell scripts"
while IFS= read -r -d '' f; do
  if head -1 "$f" | grep -q 'bin/sh$'; then
    sh -n "$f" && ok "${f#"$here"/} (sh -n)" || bad "${f#"$here"/}"
  else
    bash -n "$f" && ok "${f#"$here"/} (bash -n)" || bad "${f#"$here"/}"
  fi
done < <(find "$here" -type f \( -name '*.sh' -o -name 'qledger-run' \) -print0 | sort -z)

echo "== python"
while IFS= read -r -d '' f; do
  "$python" -c 'import ast,sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$f" \
    && ok "${f#"$here"/}" || bad "${f#"$here"/}"
done < <(find "$here" -type f -name '*.py' -print0 | sort -z)

echo "== qledger env example: every QLEDGER_* setting documented"
"$python" - "$here/qledger/qledger.env.example" <<'EOF' || failed=1
import re, sys
sys.path.insert(0, __import__("os").getcwd())
from api.settings import Settings
text = open(sys.argv[1]).read()
missing = [f"QLEDGER_{n.upper()}" for n in Settings.model_fields
           if f"QLEDGER_{n.upper()}" not in text]
print("  ok    all settings listed" if not missing else f"  FAIL  missing: {missing}")
sys.exit(1 if missing else 0)
EOF

echo "== Besu network files"
for dir in "$here/besu" "$@"; do
  "$python" "$here/besu/qbft.py" check "$dir" | sed 's/^/  /' || failed=1
done

if command -v systemd-analyze >/dev/null; then
  echo "== systemd units (missing /opt binaries are reported, not failed)"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  # All units side by side first: some bind to others (flower-superexec@ to flower-supernode@).
  for unit in "$here"/*/systemd/*.service; do
    name="$(basename "$unit")"
    [[ "$name" == *@.service ]] && name="${name/@.service/@instance.service}"
    cp "$unit" "$tmp/$name"
  done
  for unit in "$here"/*/systemd/*.service; do
    name="$(basename "$unit")"
    [[ "$name" == *@.service ]] && name="${name/@.service/@instance.service}"
    out="$(systemd-analyze verify --man=no "$tmp/$name" 2>&1 | grep -v 'is not executable: No such file' || true)"
    [[ -z "$out" ]] && ok "$(basename "$unit")" || bad "$(basename "$unit"): $out"
  done
fi

exit "$failed"
