#!/usr/bin/env bash
# Refreshes the files embedded in install.sh from the repository (systemd/*, config.example.toml).
# install.sh marks each embedded file with `# embed: PATH` followed by a quoted heredoc; this
# replaces the heredoc's body with PATH's current content. tests/scripts/install.bats fails when
# they differ. Usage: tests/scripts/embed.sh   (from anywhere in the repository)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
tmp="$(mktemp install.sh.XXXXXX)"
trap 'rm -f "$tmp"' EXIT
awk '
  skipping { if ($0 == "TAILOPSMCP_EMBEDDED_EOF") { skipping = 0; print } ; next }
  /^  # embed: / { path = $3; print; next }
  path != "" && /^  cat <<.TAILOPSMCP_EMBEDDED_EOF.$/ {
    print
    while ((getline line < path) > 0) print line
    close(path)
    path = ""
    skipping = 1
    next
  }
  { print }
' install.sh >"$tmp"
chmod 0755 "$tmp"
if cmp -s "$tmp" install.sh; then
  echo "embed: install.sh is up to date"
else
  mv -f "$tmp" install.sh
  echo "embed: install.sh refreshed"
fi
