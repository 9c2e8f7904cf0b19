#!/usr/bin/env bash
# tailopsmcp in a Proxmox VE LXC container, community-scripts style.
#
# On a Proxmox VE host, as root:
#   TAILOPSMCP_BINARY=/root/tailopsmcp TS_AUTHKEY=tskey-auth-... TS_TAGS=tag:mcp-server \
#     bash -c "$(curl -fsSL https://RAW-URL/ct/tailopsmcp.sh)"
# creates an unprivileged Debian container with TUN for tailscaled, installs Tailscale and
# tailopsmcp in it (install.sh), and prints the container id, its tailnet name and the MCP URL.
#
# Run inside such a container (not a PVE host, tailopsmcp installed), it updates tailopsmcp:
# `install.sh --upgrade` with TAILOPSMCP_BINARY or TAILOPSMCP_RELEASE_URL + TAILOPSMCP_SHA256.
#
# Environment (each has a default; set it to override):
#   var_cpu=1 var_ram=512 (MiB) var_disk=4 (GiB) var_os=debian var_version=12 var_unprivileged=1
#   var_tags="tailscale;mcp" var_hostname=tailopsmcp var_bridge=vmbr0
#   var_template_storage=  (default: the first active storage with content vztmpl)
#   var_container_storage= (default: the first active storage with content rootdir)
#   var_ctid=              (default: pvesh get /cluster/nextid)
#   var_docker=no          yes: also sets keyctl=1 so Docker can run in the container later
#   TS_AUTHKEY, TS_TAGS, TS_HOSTNAME      passed to `tailscale up` in the container
#   TAILOPSMCP_BINARY      a local tailopsmcp binary on this host to push into the container
#   TAILOPSMCP_RELEASE_URL, TAILOPSMCP_SHA256   or a release download (checked) instead
#   TAILOPSMCP_INSTALL_URL where to fetch install.sh when there is no local copy beside this script
#   TAILOPSMCP_NETWORK_TIMEOUT=60         seconds to wait for the container's default route
#   PVE_LXC_CONF_DIR=/etc/pve/lxc         (tests only) where the container configs live
set -euo pipefail

APP=tailopsmcp
var_cpu="${var_cpu:-1}"
var_ram="${var_ram:-512}"
var_disk="${var_disk:-4}"
var_os="${var_os:-debian}"
var_version="${var_version:-12}"
var_unprivileged="${var_unprivileged:-1}"
var_tags="${var_tags:-tailscale;mcp}"
var_hostname="${var_hostname:-tailopsmcp}"
var_bridge="${var_bridge:-vmbr0}"
var_template_storage="${var_template_storage:-}"
var_container_storage="${var_container_storage:-}"
var_ctid="${var_ctid:-}"
var_docker="${var_docker:-no}"
PVE_LXC_CONF_DIR="${PVE_LXC_CONF_DIR:-/etc/pve/lxc}"
NETWORK_TIMEOUT="${TAILOPSMCP_NETWORK_TIMEOUT:-60}"
# No published location yet: set TAILOPSMCP_INSTALL_URL or keep install.sh beside this script.
DEFAULT_INSTALL_URL=""

# The TUN device for tailscaled inside an unprivileged container (DESIGN.md, Proxmox LXC facts).
# These are raw LXC keys: they go into ID.conf, never through `pct set`.
TUN_LINES=(
  "lxc.cgroup2.devices.allow: c 10:200 rwm"
  "lxc.mount.entry: /dev/net/tun dev/net/tun none bind,create=file"
)

msg() { printf '%s-ct: %s\n' "$APP" "$*"; }
die() {
  printf '%s-ct: error: %s\n' "$APP" "$*" >&2
  exit 1
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# The directory of this script when it runs from a file (empty when piped: bash -c "$(curl ...)").
script_dir() {
  local src="${BASH_SOURCE[0]:-}"
  if [ -n "$src" ] && [ -f "$src" ]; then
    cd "$(dirname "$src")" && pwd
  fi
}

# Prints the path of an install.sh to use: beside this script (ct/../install.sh or ./install.sh),
# else downloaded from TAILOPSMCP_INSTALL_URL.
locate_install_sh() {
  local dir url
  dir="$(script_dir)"
  if [ -n "$dir" ]; then
    for candidate in "$dir/../install.sh" "$dir/install.sh"; do
      if [ -f "$candidate" ]; then
        printf '%s\n' "$candidate"
        return
      fi
    done
  fi
  url="${TAILOPSMCP_INSTALL_URL:-$DEFAULT_INSTALL_URL}"
  if [ -z "$url" ] && [ -f "${TAILOPSMCP_ROOT:-}/root/tailopsmcp-install.sh" ]; then
    # Inside a container this script created: the installer pushed at creation time.
    printf '%s\n' "${TAILOPSMCP_ROOT:-}/root/tailopsmcp-install.sh"
    return
  fi
  [ -n "$url" ] || die "no install.sh beside this script and TAILOPSMCP_INSTALL_URL is not set"
  curl -fsSL "$url" -o "$WORK/install.sh" || die "cannot download install.sh from $url"
  printf '%s\n' "$WORK/install.sh"
}

is_pve_host() {
  command -v pct >/dev/null && command -v pveam >/dev/null && [ -d "$PVE_LXC_CONF_DIR" ]
}

# Arguments for install.sh that select the binary (both modes).
binary_source_check() {
  if [ -n "${TAILOPSMCP_BINARY:-}" ]; then
    [ -f "$TAILOPSMCP_BINARY" ] || die "TAILOPSMCP_BINARY=$TAILOPSMCP_BINARY: no such file"
  elif [ -n "${TAILOPSMCP_RELEASE_URL:-}" ]; then
    [ -n "${TAILOPSMCP_SHA256:-}" ] || die "TAILOPSMCP_RELEASE_URL needs TAILOPSMCP_SHA256"
  else
    die "no tailopsmcp binary: no release is published yet. Set TAILOPSMCP_BINARY=/path/to/tailopsmcp (cargo build --release) or TAILOPSMCP_RELEASE_URL and TAILOPSMCP_SHA256"
  fi
}

# --- Inside the container: update -----------------------------------------------------------
update_in_container() {
  msg "not a Proxmox VE host and tailopsmcp is installed here: updating"
  binary_source_check
  local installer args=(--upgrade)
  installer="$(locate_install_sh)"
  if [ -n "${TAILOPSMCP_BINARY:-}" ]; then
    args+=(--binary "$TAILOPSMCP_BINARY")
  else
    args+=(--release-url "$TAILOPSMCP_RELEASE_URL" --sha256 "$TAILOPSMCP_SHA256")
  fi
  bash "$installer" "${args[@]}"
}

# --- On the PVE host: create ----------------------------------------------------------------
first_active_storage() {
  pvesm status -content "$1" | awk 'NR > 1 && $3 == "active" { print $1; exit }'
}

pick_template() {
  local storage="$1" pattern="^${var_os}-${var_version}-standard_.*_amd64\.tar\.(zst|gz|xz)$" name
  name="$(pveam list "$storage" | awk 'NR > 1 { sub(/^.*:vztmpl\//, "", $1); print $1 }' |
    grep -E "$pattern" | sort -V | tail -n 1 || true)"
  if [ -z "$name" ]; then
    msg "downloading the $var_os $var_version template to $storage" >&2
    pveam update >/dev/null
    name="$(pveam available --section system | awk '{ print $2 }' | grep -E "$pattern" |
      sort -V | tail -n 1 || true)"
    [ -n "$name" ] || die "no $var_os $var_version standard template in \`pveam available\`"
    pveam download "$storage" "$name" >/dev/null
  fi
  printf '%s\n' "$name"
}

write_tun_lines() {
  local conf="$PVE_LXC_CONF_DIR/$1.conf" line
  [ -f "$conf" ] || die "$conf not found after pct create"
  for line in "${TUN_LINES[@]}"; do
    grep -qxF "$line" "$conf" || printf '%s\n' "$line" >>"$conf"
  done
}

wait_network() {
  local ctid="$1" i
  for ((i = 0; i < NETWORK_TIMEOUT; i++)); do
    if [ -n "$(pct exec "$ctid" -- ip -4 route show default 2>/dev/null || true)" ]; then
      return 0
    fi
    sleep 1
  done
  die "container $ctid has no default route after ${NETWORK_TIMEOUT}s (DHCP on $var_bridge?)"
}

create_container() {
  [ "$(id -u)" -eq 0 ] || [ -n "${TAILOPSMCP_ROOT:-}" ] || die "run as root on the Proxmox VE host"
  for cmd in pct pveam pvesm pvesh; do
    command -v "$cmd" >/dev/null || die "$cmd not found: run this on a Proxmox VE host"
  done
  binary_source_check
  local installer
  installer="$(locate_install_sh)"

  local ctid="${var_ctid:-}"
  [ -n "$ctid" ] || ctid="$(pvesh get /cluster/nextid)"
  local tstore="${var_template_storage:-}" rstore="${var_container_storage:-}"
  [ -n "$tstore" ] || tstore="$(first_active_storage vztmpl)"
  [ -n "$tstore" ] || die "no active storage holds container templates (pvesm status -content vztmpl)"
  [ -n "$rstore" ] || rstore="$(first_active_storage rootdir)"
  [ -n "$rstore" ] || die "no active storage holds container volumes (pvesm status -content rootdir)"
  local template
  template="$(pick_template "$tstore")"

  local features="nesting=1"
  case "$var_docker" in yes | 1 | true) features="nesting=1,keyctl=1" ;; esac

  msg "creating CT $ctid ($var_os $var_version, ${var_cpu} CPU, ${var_ram} MiB, ${var_disk} GiB on $rstore, bridge $var_bridge)"
  pct create "$ctid" "$tstore:vztmpl/$template" \
    --hostname "$var_hostname" \
    --cores "$var_cpu" \
    --memory "$var_ram" \
    --rootfs "$rstore:$var_disk" \
    --net0 "name=eth0,bridge=$var_bridge,ip=dhcp" \
    --unprivileged "$var_unprivileged" \
    --features "$features" \
    --tags "$var_tags" \
    --ostype "$var_os" \
    --onboot 1
  write_tun_lines "$ctid"
  msg "CT $ctid: TUN device allowed in $PVE_LXC_CONF_DIR/$ctid.conf"

  pct start "$ctid"
  wait_network "$ctid"
  msg "CT $ctid: network up"

  pct push "$ctid" "$installer" /root/tailopsmcp-install.sh --perms 0755
  local args=()
  if [ -n "${TAILOPSMCP_BINARY:-}" ]; then
    pct push "$ctid" "$TAILOPSMCP_BINARY" /root/tailopsmcp.bin --perms 0755
    args+=(--binary /root/tailopsmcp.bin)
  else
    args+=(--release-url "$TAILOPSMCP_RELEASE_URL" --sha256 "$TAILOPSMCP_SHA256")
  fi
  if [ -n "${TS_AUTHKEY:-}" ]; then
    # The key travels as a root-only file, never on a command line (visible in ps on the host).
    (umask 077 && printf '%s' "$TS_AUTHKEY" >"$WORK/authkey")
    pct push "$ctid" "$WORK/authkey" /root/.tailopsmcp-authkey --perms 0600
    args+=(--authkey file:/root/.tailopsmcp-authkey)
    [ -z "${TS_TAGS:-}" ] || args+=(--advertise-tags "$TS_TAGS")
    [ -z "${TS_HOSTNAME:-}" ] || args+=(--hostname "$TS_HOSTNAME")
  fi
  local rc=0
  pct exec "$ctid" -- bash /root/tailopsmcp-install.sh "${args[@]}" || rc=$?
  if [ -n "${TS_AUTHKEY:-}" ]; then
    pct exec "$ctid" -- rm -f /root/.tailopsmcp-authkey || true
  fi
  [ "$rc" = 0 ] || die "install.sh failed in CT $ctid (exit $rc); fix it and re-run: pct exec $ctid -- bash /root/tailopsmcp-install.sh ${args[*]}"

  local name
  name="$(pct exec "$ctid" -- tailscale status --json --peers=false 2>/dev/null |
    sed -n 's/^[[:space:]]*"DNSName":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1 || true)"
  name="${name%.}"
  echo
  msg "container: $ctid"
  if [ -n "$name" ]; then
    msg "tailnet name: $name"
    msg "MCP URL: http://$name:8471/mcp"
    msg "client: claude mcp add --transport http tailopsmcp http://$name:8471/mcp"
  else
    msg "tailnet name: not logged in yet; run: pct exec $ctid -- tailscale up --advertise-tags=tag:mcp-server"
    msg "MCP URL: http://<name>.<tailnet>.ts.net:8471/mcp once it is up"
  fi
  msg "update later: pct exec $ctid -- bash /root/tailopsmcp-install.sh --upgrade --binary PATH"
}

if is_pve_host; then
  create_container
elif [ -x "${TAILOPSMCP_ROOT:-}/usr/local/bin/tailopsmcp" ]; then
  update_in_container
else
  die "not a Proxmox VE host (no pct/pveam or $PVE_LXC_CONF_DIR), and tailopsmcp is not installed here to update"
fi
