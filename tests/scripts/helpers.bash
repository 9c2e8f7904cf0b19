# Shared set-up for the bats tests: a scratch root for install.sh (TAILOPSMCP_ROOT), a PATH
# prefix of recorded-call stand-ins (fakes/fake linked under each tool's name), and helpers.
# shellcheck shell=bash

REPO="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
FAKES=(pct pveam pvesm pvesh tailscale systemctl apt-get useradd userdel getent chown curl ss sleep journalctl id)

common_setup() {
  T="$BATS_TEST_TMPDIR"
  export FAKE_LOG="$T/calls.log" FAKE_STATE="$T/state"
  : >"$FAKE_LOG"
  mkdir -p "$T/bin" "$FAKE_STATE"
  for f in "${FAKES[@]}"; do ln -sf "$REPO/tests/scripts/fakes/fake" "$T/bin/$f"; done
  export PATH="$T/bin:$PATH"
  export TAILOPSMCP_ROOT="$T/root"
  export TAILOPSMCP_HEALTH_TIMEOUT=3
  mkdir -p "$TAILOPSMCP_ROOT/etc"
  os_release debian 12 bookworm
  # A stand-in for the server binary: `check-config` succeeds and is recorded.
  make_binary "$T/tailopsmcp" v1
  unset TS_AUTHKEY TS_TAGS TS_HOSTNAME TAILOPSMCP_BINARY TAILOPSMCP_RELEASE_URL TAILOPSMCP_SHA256
}

os_release() {
  printf 'ID=%s\nVERSION_ID="%s"\nVERSION_CODENAME=%s\n' "$1" "$2" "$3" >"$TAILOPSMCP_ROOT/etc/os-release"
}

# make_binary PATH VERSION: a fake server binary whose content differs by VERSION.
make_binary() {
  printf '#!/bin/sh\n# fake tailopsmcp %s\necho "tailopsmcp $*" >>"%s"\n' "$2" "$FAKE_LOG" >"$1"
  chmod 0755 "$1"
}

# Has the call log this exact line?
called() { grep -qxF -- "$1" "$FAKE_LOG"; }
# How many lines of the call log start with this prefix?
count_calls() { grep -cF -- "$1" "$FAKE_LOG" || true; }
# The call log without the fake binary's own calls and the polling noise.
calls() { grep -vE '^(sleep|getent|id|ss|tailopsmcp)( |$)' "$FAKE_LOG" || true; }

install_sh() { bash "$REPO/install.sh" "$@"; }

# Bats ignores `! cmd` under errexit, so negative checks go through these (they fail the test).
# refute_log GREP-ARGS...: no line of the call log matches.
refute_log() {
  if grep -q "$@" "$FAKE_LOG"; then
    echo "unexpected call(s): $(grep "$@" "$FAKE_LOG")" >&2
    return 1
  fi
}
# refute_text GREP-ARGS... TEXT: no line of TEXT matches.
refute_text() {
  local text="${*: -1}"
  if printf '%s\n' "$text" | grep -q "${@:1:$#-1}"; then
    echo "unexpected line(s): $(printf '%s\n' "$text" | grep "${@:1:$#-1}")" >&2
    return 1
  fi
}
