#!/usr/bin/env bats
# shellcheck disable=SC2030,SC2031  # each @test is a subshell: exports are per test, on purpose
# install.sh against a scratch root (TAILOPSMCP_ROOT) with recorded-call stand-ins.

load helpers

setup() { common_setup; }

R() { printf '%s' "$TAILOPSMCP_ROOT$1"; }

@test "embedded unit, drop-ins and config are byte-identical to the repository's" {
  run install_sh --print-embedded unit
  [ "$status" -eq 0 ]
  diff <(printf '%s\n' "$output") "$REPO/systemd/tailopsmcp.service"
  diff <(install_sh --print-embedded helper) "$REPO/systemd/tailopsmcp-helper@.service"
  diff <(install_sh --print-embedded docker) "$REPO/systemd/docker-access.conf"
  diff <(install_sh --print-embedded credentials) "$REPO/systemd/credentials.conf.example"
  diff <(install_sh --print-embedded config) "$REPO/config.example.toml"
}

@test "default config is the example with the dev-mode grant commented out" {
  run diff "$REPO/config.example.toml" <(install_sh --print-embedded default-config)
  [ "$status" -eq 1 ]
  [ "$(printf '%s\n' "$output" | grep -c '^> # ')" -eq 4 ]
  printf '%s\n' "$output" | grep -qxF '> # match = "user:alice@example.com"'
  refute_text '^match = "user:alice' "$(install_sh --print-embedded default-config)"
}

@test "install without --binary or --release-url stops with a clear message and changes nothing" {
  run install_sh --skip-tailscale
  [ "$status" -eq 1 ]
  [[ "$output" == *"tailopsmcp-install: error: no binary to install: no tailopsmcp release is published yet"*"--binary"* ]]
  [ ! -e "$(R /usr/local/bin/tailopsmcp)" ]
  [ ! -e "$(R /etc/systemd/system/tailopsmcp.service)" ]
  refute_log '^systemctl'
}

@test "--release-url without --sha256 is refused; a wrong checksum is refused" {
  run install_sh --skip-tailscale --release-url https://example.invalid/tailopsmcp
  [ "$status" -eq 1 ]
  [[ "$output" == *"needs --sha256"* ]]
  run install_sh --skip-tailscale --release-url https://example.invalid/tailopsmcp --sha256 0000
  [ "$status" -eq 1 ]
  [[ "$output" == *"checksum mismatch"* ]]
  [ ! -e "$(R /usr/local/bin/tailopsmcp)" ]
  # No temp file left behind.
  [ -z "$(find "$(R /usr/local/bin)" -name 'tailopsmcp.*')" ]
}

@test "--release-url with the right --sha256 installs the download" {
  export FAKE_CURL_BODY=$'#!/bin/sh\n# release bytes\n'
  sum="$(printf '%s' "$FAKE_CURL_BODY" | sha256sum | cut -d' ' -f1)"
  run install_sh --skip-tailscale --release-url https://example.invalid/tailopsmcp --sha256 "${sum^^}"
  [ "$status" -eq 0 ]
  [[ "$output" == *"checksum ok ($sum)"* ]]
  tmp="$(grep -o "$(R /usr/local/bin)/tailopsmcp\.[A-Za-z0-9]*" "$FAKE_LOG" | head -n1)"
  called "curl -fsSL https://example.invalid/tailopsmcp -o $tmp"
  cmp "$(R /usr/local/bin/tailopsmcp)" <(printf '%s' "$FAKE_CURL_BODY")
}

@test "unsupported OS is refused, supported ones accepted" {
  os_release centos 9 ""
  run install_sh --skip-tailscale --binary "$T/tailopsmcp"
  [ "$status" -eq 1 ]
  [[ "$output" == *"unsupported OS 'centos 9'"* ]]
  for v in "debian 13 trixie" "ubuntu 22.04 jammy" "ubuntu 24.04 noble"; do
    # shellcheck disable=SC2086
    os_release $v
    run install_sh --skip-tailscale --binary "$T/tailopsmcp"
    [ "$status" -eq 0 ]
  done
}

@test "fresh install: exact commands, files, modes, URL and client snippet" {
  export FAKE_TS_DNSNAME=mcp.tail1234.ts.net FAKE_LISTENING=1
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  echo "$output"
  [ "$status" -eq 0 ]
  expected="getent passwd tailopsmcp
useradd --system --user-group --home-dir /var/lib/tailopsmcp --no-create-home --shell /usr/sbin/nologin --comment tailopsmcp MCP server tailopsmcp
getent group systemd-journal"
  diff <(grep -E '^(useradd|getent)' "$FAKE_LOG" | head -n 3) <(printf '%s\n' "$expected")
  diff <(grep -E '^systemctl' "$FAKE_LOG") <(printf '%s\n' \
    "systemctl daemon-reload" \
    "systemctl is-active --quiet tailopsmcp.service" \
    "systemctl enable --now tailopsmcp.service" \
    "systemctl is-active --quiet tailopsmcp.service")
  called "chown tailopsmcp:tailopsmcp $(R /var/lib/tailopsmcp)"
  called "tailopsmcp check-config --config $(R /etc/tailopsmcp/config.toml)"
  called "ss -ltnH sport = :8471"
  refute_log -E '^(apt-get|curl)'
  cmp "$T/tailopsmcp" "$(R /usr/local/bin/tailopsmcp)"
  [ "$(stat -c %a "$(R /usr/local/bin/tailopsmcp)")" = 755 ]
  cmp "$REPO/systemd/tailopsmcp.service" "$(R /etc/systemd/system/tailopsmcp.service)"
  [ "$(stat -c %a "$(R /etc/systemd/system/tailopsmcp.service)")" = 644 ]
  cmp "$REPO/systemd/credentials.conf.example" "$(R /etc/systemd/system/tailopsmcp.service.d/credentials.conf.example)"
  [ ! -e "$(R /etc/systemd/system/tailopsmcp.service.d/docker-access.conf)" ]
  diff <(install_sh --print-embedded default-config) "$(R /etc/tailopsmcp/config.toml)"
  [ "$(stat -c %a "$(R /etc/tailopsmcp/config.toml)")" = 640 ]
  [ "$(stat -c %a "$(R /var/lib/tailopsmcp)")" = 750 ]
  [[ "$output" == *"tailopsmcp-install: tailopsmcp.service: active, listening on the tailnet (port 8471)"* ]]
  [[ "$output" == *"tailopsmcp-install: MCP URL: http://mcp.tail1234.ts.net:8471/mcp"* ]]
  [[ "$output" == *"claude mcp add --transport http tailopsmcp http://mcp.tail1234.ts.net:8471/mcp"* ]]
  # Every line the installer prints itself is prefixed.
  refute_text -vE '^(tailopsmcp-install: |  |$)' "$output"
}

@test "without tailscaled up: healthy when active, the URL says where to look" {
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 0 ]
  [[ "$output" == *"active, waiting for tailscaled"* ]]
  [[ "$output" == *"MCP URL: http://<this-node>.<tailnet>.ts.net:8471/mcp"* ]]
  refute_log '^ss'
}

@test "a port set in the config is the one checked and printed" {
  mkdir -p "$(R /etc/tailopsmcp)"
  printf '[server]\nport = 9000 # mine\n\n[audit]\nport = 1\n' >"$(R /etc/tailopsmcp/config.toml)"
  export FAKE_TS_DNSNAME=mcp.tail1234.ts.net FAKE_LISTENING=1
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 0 ]
  called "ss -ltnH sport = :9000"
  [[ "$output" == *"http://mcp.tail1234.ts.net:9000/mcp"* ]]
}

@test "unhealthy service: the journal is shown and the install fails" {
  export FAKE_NEVER_ACTIVE=1
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 1 ]
  called "journalctl -u tailopsmcp.service -n 30 --no-pager"
  [[ "$output" == *"tailopsmcp-install: error: tailopsmcp.service is not healthy after 3s"* ]]
}

@test "second run is a no-op: no daemon-reload, no restart, config untouched" {
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  echo "# operator edit" >>"$(R /etc/tailopsmcp/config.toml)"
  before="$(sha256sum "$(R /etc/tailopsmcp/config.toml)")"
  : >"$FAKE_LOG"
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 0 ]
  [ "$(count_calls useradd)" -eq 0 ]
  [ "$(count_calls 'systemctl daemon-reload')" -eq 0 ]
  [ "$(count_calls 'systemctl restart')" -eq 0 ]
  called "systemctl enable --now tailopsmcp.service"
  [[ "$output" == *"binary $(R /usr/local/bin/tailopsmcp): unchanged"* ]]
  [[ "$output" == *"config $(R /etc/tailopsmcp/config.toml): exists, left as it is"* ]]
  [ "$(sha256sum "$(R /etc/tailopsmcp/config.toml)")" = "$before" ]
}

@test "re-run after a failed run completes the install" {
  export FAKE_NEVER_ACTIVE=1
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 1 ]
  unset FAKE_NEVER_ACTIVE
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 0 ]
  [ -e "$FAKE_STATE/active" ] && [ -e "$FAKE_STATE/enabled" ]
  [ -z "$(find "$TAILOPSMCP_ROOT" -name '*.??????')" ]
}

@test "--upgrade of a stopped service starts it without a restart" {
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  rm -f "$FAKE_STATE/active"
  make_binary "$T/tailopsmcp-v2" v2
  : >"$FAKE_LOG"
  run install_sh --upgrade --binary "$T/tailopsmcp-v2"
  [ "$status" -eq 0 ]
  called "systemctl enable --now tailopsmcp.service"
  [ "$(count_calls 'systemctl restart')" -eq 0 ]
  [ -e "$FAKE_STATE/active" ]
}

@test "--upgrade replaces the binary, keeps config and data, restarts" {
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  echo "# operator edit" >>"$(R /etc/tailopsmcp/config.toml)"
  echo "audit rows" >"$(R /var/lib/tailopsmcp/tailopsmcp.db)"
  conf="$(sha256sum "$(R /etc/tailopsmcp/config.toml)")"
  make_binary "$T/tailopsmcp-v2" v2
  : >"$FAKE_LOG"
  run install_sh --upgrade --binary "$T/tailopsmcp-v2"
  [ "$status" -eq 0 ]
  cmp "$T/tailopsmcp-v2" "$(R /usr/local/bin/tailopsmcp)"
  [ "$(sha256sum "$(R /etc/tailopsmcp/config.toml)")" = "$conf" ]
  [ "$(cat "$(R /var/lib/tailopsmcp/tailopsmcp.db)")" = "audit rows" ]
  diff <(calls) <(printf '%s\n' \
    "chown tailopsmcp:tailopsmcp $(R /var/lib/tailopsmcp)" \
    "chown root:root $(grep -o "$(R /usr/local/bin)/tailopsmcp\.[A-Za-z0-9]*" "$FAKE_LOG" | head -n1)" \
    "systemctl is-active --quiet tailopsmcp.service" \
    "systemctl enable --now tailopsmcp.service" \
    "systemctl restart tailopsmcp.service" \
    "tailscale status --json --peers=false" \
    "systemctl is-active --quiet tailopsmcp.service" \
    "systemctl is-active --quiet tailopsmcp.service" \
    "tailscale status --json --peers=false" \
    "tailscale ip -4")
}

@test "--upgrade on a host without tailopsmcp refuses" {
  run install_sh --upgrade --binary "$T/tailopsmcp"
  [ "$status" -eq 1 ]
  [[ "$output" == *"tailopsmcp is not installed here: run install.sh without --upgrade"* ]]
}

@test "--uninstall removes unit, drop-ins and binary, keeps config, data and user" {
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  echo "audit rows" >"$(R /var/lib/tailopsmcp/tailopsmcp.db)"
  : >"$FAKE_LOG"
  run install_sh --uninstall
  [ "$status" -eq 0 ]
  diff <(calls) <(printf '%s\n' "systemctl disable --now tailopsmcp.service" "systemctl daemon-reload")
  [ ! -e "$(R /etc/systemd/system/tailopsmcp.service)" ]
  [ ! -e "$(R /etc/systemd/system/tailopsmcp.service.d)" ]
  [ ! -e "$(R /usr/local/bin/tailopsmcp)" ]
  [ -e "$(R /etc/tailopsmcp/config.toml)" ]
  [ "$(cat "$(R /var/lib/tailopsmcp/tailopsmcp.db)")" = "audit rows" ]
  [ -e "$FAKE_STATE/user" ]
  [[ "$output" == *"kept"*"--uninstall --purge removes them"* ]]
  # Again: nothing left to remove, still succeeds.
  run install_sh --uninstall
  [ "$status" -eq 0 ]
}

@test "--uninstall --purge also removes config, data and the user" {
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  : >"$FAKE_LOG"
  run install_sh --uninstall --purge
  [ "$status" -eq 0 ]
  called "userdel tailopsmcp"
  [ ! -e "$(R /etc/tailopsmcp)" ]
  [ ! -e "$(R /var/lib/tailopsmcp)" ]
  [ ! -e "$FAKE_STATE/user" ]
}

@test "--purge without --uninstall is refused" {
  run install_sh --purge
  [ "$status" -eq 1 ]
  [[ "$output" == *"--purge only goes with --uninstall"* ]]
}

@test "Tailscale absent: official apt repo for the codename, install, enable tailscaled" {
  os_release ubuntu 24.04 noble
  # `command -v tailscale` must fail: drop the stand-in until apt-get "installs" it.
  rm "$T/bin/tailscale"
  run install_sh --binary "$T/tailopsmcp"
  [ "$status" -eq 0 ]
  called "curl -fsSL https://pkgs.tailscale.com/stable/ubuntu/noble.noarmor.gpg -o $(R /usr/share/keyrings/tailscale-archive-keyring.gpg).tmp"
  called "curl -fsSL https://pkgs.tailscale.com/stable/ubuntu/noble.tailscale-keyring.list -o $(R /etc/apt/sources.list.d/tailscale.list).tmp"
  called "apt-get update -q"
  called "apt-get install -y -q tailscale"
  called "systemctl enable --now tailscaled.service"
  [ -e "$(R /usr/share/keyrings/tailscale-archive-keyring.gpg)" ]
  [ -e "$(R /etc/apt/sources.list.d/tailscale.list)" ]
}

@test "--skip-tailscale with Tailscale absent installs nothing from apt" {
  rm "$T/bin/tailscale"
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale
  [ "$status" -eq 0 ]
  refute_log -E '^(apt-get|curl)'
  [[ "$output" == *"Tailscale is not installed (--skip-tailscale)"* ]]
}

@test "--authkey runs tailscale up with the key in a file, tags and hostname" {
  run install_sh --binary "$T/tailopsmcp" --authkey tskey-auth-SECRET --advertise-tags tag:mcp-server --hostname mcp
  [ "$status" -eq 0 ]
  line="$(grep '^tailscale up' "$FAKE_LOG")"
  [[ "$line" =~ ^tailscale\ up\ --auth-key=file:[^\ ]+\ --advertise-tags=tag:mcp-server\ --hostname=mcp$ ]]
  refute_log SECRET
  [[ "$output" != *SECRET* ]]
  keyfile="${line#*file:}"; keyfile="${keyfile%% *}"
  [ ! -e "$keyfile" ]
}

@test "--authkey file:PATH and TS_TAGS from the environment; already Running skips tailscale up" {
  export TS_TAGS=tag:a,tag:b
  run install_sh --binary "$T/tailopsmcp" --authkey file:/root/key
  [ "$status" -eq 0 ]
  called "tailscale up --auth-key=file:/root/key --advertise-tags=tag:a,tag:b"
  : >"$FAKE_LOG"
  export FAKE_TS_DNSNAME=mcp.tail1234.ts.net FAKE_LISTENING=1
  run install_sh --binary "$T/tailopsmcp" --authkey file:/root/key
  [ "$status" -eq 0 ]
  [ "$(count_calls 'tailscale up')" -eq 0 ]
  [[ "$output" == *"Tailscale: already up"* ]]
}

@test "--docker needs the docker group, installs the drop-in with a root-equivalence warning" {
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --docker
  [ "$status" -eq 1 ]
  [[ "$output" == *"group 'docker' not found"* ]]
  export FAKE_DOCKER_GROUP=1
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --docker
  [ "$status" -eq 0 ]
  [[ "$output" == *"ROOT-EQUIVALENT"* ]]
  cmp "$REPO/systemd/docker-access.conf" "$(R /etc/systemd/system/tailopsmcp.service.d/docker-access.conf)"
  # Kept by a later run without --docker (e.g. --upgrade); removed by --no-docker.
  : >"$FAKE_LOG"
  run install_sh --upgrade --binary "$T/tailopsmcp"
  [ -e "$(R /etc/systemd/system/tailopsmcp.service.d/docker-access.conf)" ]
  [ "$(count_calls 'systemctl daemon-reload')" -eq 0 ]
  run install_sh --binary "$T/tailopsmcp" --no-docker
  [ "$status" -eq 0 ]
  [ ! -e "$(R /etc/systemd/system/tailopsmcp.service.d/docker-access.conf)" ]
  called "systemctl daemon-reload"
}

@test "--service: drop-in enables the PROXY v2 listener and tailscale serve forwards to it" {
  export FAKE_TS_DNSNAME=mcp-host.tail1234.ts.net FAKE_LISTENING=1
  run install_sh --binary "$T/tailopsmcp" --service svc:mcp
  [ "$status" -eq 0 ]
  dropin="$(R /etc/systemd/system/tailopsmcp.service.d/tailscale-service.conf)"
  grep -qxF "Environment=TAILOPSMCP_SERVICE=svc:mcp" "$dropin"
  grep -qxF "Environment=TAILOPSMCP_SERVICE_LISTEN=127.0.0.1:8472" "$dropin"
  called "tailscale serve --service=svc:mcp --tls-terminated-tcp=443 --proxy-protocol=2 tcp://127.0.0.1:8472"
  called "systemctl daemon-reload"
  [[ "$output" == *"grant clients dst [\"svc:mcp\"]"* ]]
  # Idempotent: the same again reloads nothing; a new port rewrites the drop-in.
  : >"$FAKE_LOG"
  run install_sh --binary "$T/tailopsmcp" --service svc:mcp
  [ "$status" -eq 0 ]
  [ "$(count_calls 'systemctl daemon-reload')" -eq 0 ]
  run install_sh --binary "$T/tailopsmcp" --service svc:mcp --service-port 9443
  called "tailscale serve --service=svc:mcp --tls-terminated-tcp=443 --proxy-protocol=2 tcp://127.0.0.1:9443"
  grep -qxF "Environment=TAILOPSMCP_SERVICE_LISTEN=127.0.0.1:9443" "$dropin"
  # Kept by --upgrade, removed by --no-service.
  run install_sh --upgrade --binary "$T/tailopsmcp"
  [ -e "$dropin" ]
  run install_sh --binary "$T/tailopsmcp" --no-service
  [ "$status" -eq 0 ]
  [ ! -e "$dropin" ]
}

@test "--service without tailscale running prints the serve command; bad names and ports are refused" {
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --service svc:mcp
  [ "$status" -eq 0 ]
  [[ "$output" == *"once it is, run: tailscale serve --service=svc:mcp --tls-terminated-tcp=443 --proxy-protocol=2 tcp://127.0.0.1:8472"* ]]
  refute_log '^tailscale serve'
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --service mcp
  [ "$status" -eq 1 ]
  [[ "$output" == *"--service needs a Service name like svc:mcp, not 'mcp'"* ]]
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --service "svc:mcp;reboot"
  [ "$status" -eq 1 ]
  run install_sh --binary "$T/tailopsmcp" --skip-tailscale --service svc:mcp --service-port 99999
  [ "$status" -eq 1 ]
  [[ "$output" == *"--service-port needs a port number"* ]]
}

@test "unknown options and missing values are refused clearly" {
  run install_sh --frobnicate
  [ "$status" -eq 1 ]
  [[ "$output" == "tailopsmcp-install: error: unknown option: --frobnicate (see --help)" ]]
  run install_sh --binary
  [ "$status" -eq 1 ]
  [[ "$output" == *"--binary needs a value"* ]]
}
