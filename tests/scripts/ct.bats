#!/usr/bin/env bats
# ct/tailopsmcp.sh on a pretend Proxmox VE host: stand-ins for pct, pveam, pvesm, pvesh.

load helpers

setup() {
  common_setup
  export PVE_LXC_CONF_DIR="$T/pve/lxc"
  mkdir -p "$PVE_LXC_CONF_DIR"
  export TAILOPSMCP_BINARY="$T/tailopsmcp"
  # On the "host", install.sh must not find an installed tailopsmcp under the scratch root.
  unset var_cpu var_ram var_disk var_os var_version var_unprivileged var_tags var_hostname \
    var_bridge var_template_storage var_container_storage var_ctid var_docker
}

ct() { bash "$REPO/ct/tailopsmcp.sh"; }
TUN1="lxc.cgroup2.devices.allow: c 10:200 rwm"
TUN2="lxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file"

@test "defaults: next id, storages, template download, exact pct create, TUN lines, push, install" {
  export FAKE_TS_DNSNAME=tailopsmcp.tail1234.ts.net
  run ct
  echo "$output"
  [ "$status" -eq 0 ]
  diff <(grep -v '^id -u$' "$FAKE_LOG") <(printf '%s\n' \
    "pvesh get /cluster/nextid" \
    "pvesm status -content vztmpl" \
    "pvesm status -content rootdir" \
    "pveam list local" \
    "pveam update" \
    "pveam available --section system" \
    "pveam download local debian-12-standard_12.12-1_amd64.tar.zst" \
    "pct create 105 local:vztmpl/debian-12-standard_12.12-1_amd64.tar.zst --hostname tailopsmcp --cores 1 --memory 512 --rootfs local-lvm:4 --net0 name=eth0,bridge=vmbr0,ip=dhcp --unprivileged 1 --features nesting=1 --tags tailscale;mcp --ostype debian --onboot 1" \
    "pct start 105" \
    "pct exec 105 -- ip -4 route show default" \
    "pct push 105 $REPO/ct/../install.sh /root/tailopsmcp-install.sh --perms 0755" \
    "pct push 105 $T/tailopsmcp /root/tailopsmcp.bin --perms 0755" \
    "pct exec 105 -- bash /root/tailopsmcp-install.sh --binary /root/tailopsmcp.bin" \
    "pct exec 105 -- tailscale status --json --peers=false")
  # The TUN lines, exactly, appended to the container's config; no `pct set` anywhere.
  diff "$PVE_LXC_CONF_DIR/105.conf" <(printf '%s\n' "arch: amd64" "cores: 1" "hostname: tailopsmcp" \
    "unprivileged: 1" "$TUN1" "$TUN2")
  refute_log '^pct set'
  [[ "$output" == *"tailopsmcp-ct: container: 105"* ]]
  [[ "$output" == *"tailopsmcp-ct: tailnet name: tailopsmcp.tail1234.ts.net"* ]]
  [[ "$output" == *"tailopsmcp-ct: MCP URL: http://tailopsmcp.tail1234.ts.net:8471/mcp"* ]]
}

@test "var_* overrides from the environment reach pct create; template already present is reused" {
  export var_cpu=4 var_ram=2048 var_disk=16 var_version=13 var_unprivileged=1 var_tags="ops;ai" \
    var_hostname=mcp1 var_bridge=vmbr1 var_container_storage=fast var_template_storage=nfs var_ctid=321 \
    var_docker=yes
  export FAKE_TEMPLATE_PRESENT=debian-13-standard_13.1-2_amd64.tar.zst
  run ct
  echo "$output"
  [ "$status" -eq 0 ]
  called "pct create 321 nfs:vztmpl/debian-13-standard_13.1-2_amd64.tar.zst --hostname mcp1 --cores 4 --memory 2048 --rootfs fast:16 --net0 name=eth0,bridge=vmbr1,ip=dhcp --unprivileged 1 --features nesting=1,keyctl=1 --tags ops;ai --ostype debian --onboot 1"
  called "pveam list nfs"
  [ "$(count_calls 'pvesh')" -eq 0 ]
  [ "$(count_calls 'pvesm')" -eq 0 ]
  [ "$(count_calls 'pveam update')" -eq 0 ]
  [ "$(count_calls 'pveam download')" -eq 0 ]
  grep -qxF "$TUN1" "$PVE_LXC_CONF_DIR/321.conf"
  grep -qxF "$TUN2" "$PVE_LXC_CONF_DIR/321.conf"
}

@test "TUN lines are not duplicated when one is already in the conf" {
  export FAKE_CONF_HAS_TUN=1
  run ct
  [ "$status" -eq 0 ]
  [ "$(grep -cxF "$TUN1" "$PVE_LXC_CONF_DIR/105.conf")" -eq 1 ]
  [ "$(grep -cxF "$TUN2" "$PVE_LXC_CONF_DIR/105.conf")" -eq 1 ]
}

@test "auth key travels as a pushed file, tags and hostname are passed, the file is removed" {
  export TS_AUTHKEY=tskey-auth-SECRET TS_TAGS=tag:mcp-server TS_HOSTNAME=mcp
  run ct
  [ "$status" -eq 0 ]
  grep -qE "^pct push 105 .*/authkey /root/.tailopsmcp-authkey --perms 0600$" "$FAKE_LOG"
  called "pct exec 105 -- bash /root/tailopsmcp-install.sh --binary /root/tailopsmcp.bin --authkey file:/root/.tailopsmcp-authkey --advertise-tags tag:mcp-server --hostname mcp"
  called "pct exec 105 -- rm -f /root/.tailopsmcp-authkey"
  refute_log SECRET
  [[ "$output" != *SECRET* ]]
  [[ "$output" == *"tailnet name: not logged in yet"* ]]
}

@test "waits for the network, and gives up after the timeout" {
  export FAKE_ROUTE_AFTER=3
  run ct
  [ "$status" -eq 0 ]
  [ "$(count_calls 'pct exec 105 -- ip -4 route show default')" -eq 4 ]
  rm -f "$FAKE_STATE/route-polls"
  : >"$FAKE_LOG"
  export FAKE_ROUTE_AFTER=100 TAILOPSMCP_NETWORK_TIMEOUT=5
  run ct
  [ "$status" -eq 1 ]
  [[ "$output" == *"tailopsmcp-ct: error: container 105 has no default route after 5s"* ]]
  [ "$(count_calls 'pct exec 105 -- ip -4 route show default')" -eq 5 ]
  [ "$(count_calls 'pct push')" -eq 0 ]
}

@test "release download instead of a local binary" {
  unset TAILOPSMCP_BINARY
  export TAILOPSMCP_RELEASE_URL=https://example.invalid/tailopsmcp TAILOPSMCP_SHA256=abc123
  run ct
  [ "$status" -eq 0 ]
  called "pct exec 105 -- bash /root/tailopsmcp-install.sh --release-url https://example.invalid/tailopsmcp --sha256 abc123"
  [ "$(count_calls 'pct push 105')" -eq 1 ]
}

@test "no binary source: clear error before anything is created" {
  unset TAILOPSMCP_BINARY
  run ct
  [ "$status" -eq 1 ]
  [[ "$output" == *"tailopsmcp-ct: error: no tailopsmcp binary: no release is published yet. Set TAILOPSMCP_BINARY"* ]]
  refute_log -E '^(pct|pveam|pvesm|pvesh) '
}

@test "install.sh failing in the container fails the script with the re-run command" {
  export FAKE_INSTALL_RC=3
  run ct
  [ "$status" -eq 1 ]
  [[ "$output" == *"install.sh failed in CT 105 (exit 3)"*"pct exec 105 -- bash /root/tailopsmcp-install.sh --binary /root/tailopsmcp.bin"* ]]
}

@test "piped (bash -c \"\$(cat script)\"): install.sh comes from TAILOPSMCP_INSTALL_URL" {
  export TAILOPSMCP_INSTALL_URL=https://example.invalid/install.sh
  run bash -c "$(cat "$REPO/ct/tailopsmcp.sh")"
  [ "$status" -eq 0 ]
  grep -qE '^curl -fsSL https://example.invalid/install.sh -o /.*/install.sh$' "$FAKE_LOG"
  grep -qE '^pct push 105 /.*/install.sh /root/tailopsmcp-install.sh --perms 0755$' "$FAKE_LOG"
  refute_log -F "$REPO"
  unset TAILOPSMCP_INSTALL_URL
  : >"$FAKE_LOG"
  run bash -c "$(cat "$REPO/ct/tailopsmcp.sh")"
  [ "$status" -eq 1 ]
  [[ "$output" == *"no install.sh beside this script and TAILOPSMCP_INSTALL_URL is not set"* ]]
}

@test "inside the container (not a PVE host, tailopsmcp installed): runs install.sh --upgrade" {
  rm "$T/bin/pct" "$T/bin/pveam"
  install_sh --binary "$T/tailopsmcp" --skip-tailscale >/dev/null
  make_binary "$T/tailopsmcp-v2" v2
  export TAILOPSMCP_BINARY="$T/tailopsmcp-v2"
  : >"$FAKE_LOG"
  run ct
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"not a Proxmox VE host and tailopsmcp is installed here: updating"* ]]
  called "systemctl restart tailopsmcp.service"
  cmp "$T/tailopsmcp-v2" "$TAILOPSMCP_ROOT/usr/local/bin/tailopsmcp"
}

@test "neither a PVE host nor an installed tailopsmcp: refuses" {
  rm "$T/bin/pct"
  run ct
  [ "$status" -eq 1 ]
  [[ "$output" == *"not a Proxmox VE host"*"tailopsmcp is not installed here"* ]]
}
