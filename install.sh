#!/usr/bin/env bash
# tailopsmcp installer — Debian 12/13, Ubuntu 22.04/24.04 (host, VM or LXC container), as root.
#
#   install.sh --binary ./target/release/tailopsmcp [--authkey KEY --advertise-tags tag:mcp-server]
#   install.sh --release-url URL --sha256 SUM [...]
#   install.sh --upgrade --binary PATH        replace the binary, restart; config and data kept
#   install.sh --uninstall [--purge]          remove unit + binary; --purge also config, data, user
#   install.sh --docker | --no-docker         opt in to (or out of) Docker access (ROOT-EQUIVALENT)
#
# Idempotent and safe to re-run after a failure: every step checks what is already there, nothing
# the operator wrote is overwritten (an existing /etc/tailopsmcp/config.toml is never touched).
#
# Self-contained on purpose: the unit, its drop-ins and the default config are embedded below, so
# this one file can be fetched with curl or pushed into a container with `pct push`. The embedded
# copies are byte-identical to systemd/* and config.example.toml in the repository (checked by
# tests/scripts/install.bats; regenerate with tests/scripts/embed.sh).
#
# TAILOPSMCP_ROOT (tests only): a directory prefixed to every path this script writes
# (/etc, /usr/local/bin, /var/lib, /etc/systemd/system, /usr/share/keyrings) and to /etc/os-release,
# so the bats tests run it against a scratch tree with stand-ins for systemctl, apt-get & co.
# Never set it on a real system: the unit would not find what was installed.
set -euo pipefail
umask 022

readonly ROOT="${TAILOPSMCP_ROOT:-}"
readonly SERVICE=tailopsmcp.service
readonly SVC_USER=tailopsmcp
readonly BIN="$ROOT/usr/local/bin/tailopsmcp"
readonly UNIT_DIR="$ROOT/etc/systemd/system"
readonly HELPER_UNIT="$UNIT_DIR/tailopsmcp-helper@.service"
readonly POLKIT_DIR="$ROOT/etc/polkit-1/rules.d"
readonly POLKIT_RULE="$POLKIT_DIR/50-tailopsmcp.rules"
readonly UNIT="$UNIT_DIR/$SERVICE"
readonly DROPIN_DIR="$UNIT_DIR/$SERVICE.d"
readonly CONF_DIR="$ROOT/etc/tailopsmcp"
readonly CONF="$CONF_DIR/config.toml"
readonly STATE_DIR="$ROOT/var/lib/tailopsmcp"
readonly OS_RELEASE="$ROOT/etc/os-release"
readonly TS_KEYRING="$ROOT/usr/share/keyrings/tailscale-archive-keyring.gpg"
readonly TS_LIST="$ROOT/etc/apt/sources.list.d/tailscale.list"
# No release is published yet: without --binary or --release-url the installer stops.
readonly DEFAULT_RELEASE_URL=""
HEALTH_TIMEOUT="${TAILOPSMCP_HEALTH_TIMEOUT:-30}"

# Temp files, removed on any exit (a failed run leaves nothing half-written behind).
TMPFILES=()
cleanup() { [ "${#TMPFILES[@]}" = 0 ] || rm -f "${TMPFILES[@]}"; }
trap cleanup EXIT

msg() { printf 'tailopsmcp-install: %s\n' "$*"; }
warn() { printf 'tailopsmcp-install: warning: %s\n' "$*" >&2; }
die() {
  printf 'tailopsmcp-install: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat <<'USAGE'
Usage: install.sh [ACTION] [OPTIONS]

Actions (default: install, or repair an existing install):
  --upgrade             replace the binary and restart; keeps config and data (migrations apply)
  --uninstall           stop, disable and remove the unit and the binary; keeps config and data
  --purge               with --uninstall: also remove /etc/tailopsmcp, /var/lib/tailopsmcp and the user

Binary (one is required for install and upgrade; no release is published yet):
  --binary PATH         install this local build (cargo build --release: target/release/tailopsmcp)
  --release-url URL     download the binary from URL ...
  --sha256 SUM          ... and check it against this SHA-256 (required with --release-url)

Tailscale:
  --skip-tailscale      do not install Tailscale when it is absent
  --authkey KEY         run `tailscale up` with this auth key (or file:PATH); also env TS_AUTHKEY
  --advertise-tags T    tags for `tailscale up`, e.g. tag:mcp-server; also env TS_TAGS
  --hostname NAME       tailnet hostname for `tailscale up`

Options:
  --docker              opt in to Docker access: adds the service user to the `docker` group.
  --service svc:NAME    serve behind a Tailscale Service (stable name): enables the server's
                        PROXY v2 loopback listener (served to tailscaled's uid only) and runs
                        `tailscale serve --service=svc:NAME --tls-terminated-tcp=443
                        --proxy-protocol=2 tcp://127.0.0.1:PORT` (tailscale v1.92 or later)
  --service-port PORT   the loopback port for --service (default 8472)
  --no-service          remove the Tailscale Service listener drop-in
                        The docker group is ROOT-EQUIVALENT on this host.
  --no-docker           remove that opt-in
  --ignore-os           install on an OS other than Debian 12/13 or Ubuntu 22.04/24.04
  -h, --help            this text
USAGE
}

# ---------------------------------------------------------------------------------------------
# Embedded files (byte-identical to the repository's; see the header).

embedded_unit() {
  # embed: systemd/tailopsmcp.service
  cat <<'TAILOPSMCP_EMBEDDED_EOF'
# tailopsmcp — MCP server reachable only over this node's Tailscale tailnet.
# Installed by install.sh as /etc/systemd/system/tailopsmcp.service.
#
# Runs as the dedicated system user `tailopsmcp` (created by install.sh; not DynamicUser=, so the
# audit database in /var/lib/tailopsmcp keeps a stable owner across upgrades and reinstalls).
# It needs no capabilities: it connects to tailscaled's LocalAPI socket (mode 0666) and binds
# this node's tailnet addresses on an unprivileged port.
#
# Opt-ins, as drop-ins in /etc/systemd/system/tailopsmcp.service.d/:
#   docker-access.conf    SupplementaryGroups=docker — ROOT-EQUIVALENT (install.sh --docker)
#   credentials.conf      LoadCredential= for secrets (copy credentials.conf.example)
# Check the sandbox: systemd-analyze security tailopsmcp.service  (measured 1.5 OK offline)

[Unit]
Description=tailopsmcp — tailnet-only MCP server for operating this host
After=network-online.target tailscaled.service
Wants=network-online.target tailscaled.service
StartLimitIntervalSec=120
StartLimitBurst=10

[Service]
Type=exec
ExecStart=/usr/local/bin/tailopsmcp serve
Restart=on-failure
RestartSec=3s
TimeoutStopSec=20s

User=tailopsmcp
Group=tailopsmcp
# Reading the journal (log tools) needs this group; it grants read access to logs only.
SupplementaryGroups=systemd-journal

# /var/lib/tailopsmcp (audit DB, owned by tailopsmcp), /etc/tailopsmcp (root-owned config),
# /run/tailopsmcp (runtime files; the place for `[service] socket`: 0750, so tailscaled as root
# reaches a socket there and other users do not).
StateDirectory=tailopsmcp
StateDirectoryMode=0750
ConfigurationDirectory=tailopsmcp
ConfigurationDirectoryMode=0755
RuntimeDirectory=tailopsmcp
RuntimeDirectoryMode=0750
UMask=0077
# File descriptors: `[server] max_connections` (default 1024) client connections, plus the
# audit database, journald, tailscaled, targets and child processes. Raise both together.
LimitNOFILE=4096

# Audit events are mirrored to journald: never rate-limit them away.
LogRateLimitIntervalSec=0
SyslogIdentifier=tailopsmcp

# --- Sandbox ---------------------------------------------------------------------------------
# Deliberately NOT set: ProtectProc=invisible (hides other processes: breaks system_processes) and
# ProcSubset=pid (hides /proc/meminfo, /proc/loadavg...: breaks system_status); PrivateUsers=
# (other users' processes and files, the systemd-journal and docker groups would map to `nobody`);
# PrivateNetwork= (it serves the tailnet). IPAddressDeny= is left to the operator: executors will
# reach targets on the LAN. For a tailnet-only host add a drop-in with
#   IPAddressDeny=any
#   IPAddressAllow=localhost 100.64.0.0/10 fd7a:115c:a1e0::/48
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
KeyringMode=private
# Unix (tailscaled.sock, journald, docker.sock when opted in), IPv4/IPv6 (tailnet listener),
# netlink (interface addresses for network_interfaces).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @mount @swap @reboot @raw-io @module @obsolete @cpu-emulation @debug @clock
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
TAILOPSMCP_EMBEDDED_EOF
}

embedded_helper_unit() {
  # embed: systemd/tailopsmcp-helper@.service
  cat <<'TAILOPSMCP_EMBEDDED_EOF'
# tailopsmcp root helper: one request per instance. Installed by install.sh as
# /etc/systemd/system/tailopsmcp-helper@.service.
#
# The unprivileged tailopsmcp service cannot run apt or change unit files. For those it starts
# an instance of this template: `systemctl start tailopsmcp-helper@REQUEST.service`, which the
# polkit rule 50-tailopsmcp.rules allows the `tailopsmcp` user (and only the verb `start`).
# The instance is the whole request, `ID:OP[:OPERAND...]` systemd-escaped; `tailopsmcp helper`
# parses and validates it again and can do only this:
#   enable:UNIT / disable:UNIT   systemctl enable|disable -- UNIT, if UNIT is on `[services] units`
#                                in /etc/tailopsmcp/config.toml (checked here, as root, again)
#   apt-upgrade                  apt-get update; apt-get upgrade -y
#   apt-install:PKG[:PKG...]     apt-get update; apt-get install -y -- PKG... (Debian names only)
# Operands are unit or Debian package names: no option, path or version can be expressed.
# The result is written to /run/tailopsmcp-helper/ID.json (root:tailopsmcp 0640), where the
# service reads it; a summary goes to this instance's journal.
#
# Not sandboxed on purpose: package maintainer scripts may legitimately touch any part of the
# system, and a sandbox would make upgrades fail in surprising ways.

[Unit]
Description=tailopsmcp privileged helper (%I)
CollectMode=inactive-or-failed

[Service]
Type=oneshot
# `--`: the request is one positional word even if it were to start with `-`.
ExecStart=/usr/local/bin/tailopsmcp helper -- %I
RuntimeDirectory=tailopsmcp-helper
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
TimeoutStartSec=30min
SyslogIdentifier=tailopsmcp-helper
TAILOPSMCP_EMBEDDED_EOF
}

embedded_docker_dropin() {
  # embed: systemd/docker-access.conf
  cat <<'TAILOPSMCP_EMBEDDED_EOF'
# tailopsmcp: opt-in Docker access (installed only by `install.sh --docker`).
#
# WARNING: membership in the `docker` group is ROOT-EQUIVALENT on this host. Anyone who can talk
# to /var/run/docker.sock can start a privileged container that mounts / and owns the machine.
# With this drop-in, whatever tailopsmcp's container tools are allowed to do (by your tailnet
# policy grants) is bounded by the Docker API, not by this unit's sandbox. Only install it if you
# want the container/stack tools, and grant `containers:*`/`stacks:*` scopes narrowly.
#
# Remove with: install.sh --no-docker   (or delete this file, `systemctl daemon-reload`,
# `systemctl restart tailopsmcp`).
[Service]
SupplementaryGroups=docker
TAILOPSMCP_EMBEDDED_EOF
}

embedded_credentials_example() {
  # embed: systemd/credentials.conf.example
  cat <<'TAILOPSMCP_EMBEDDED_EOF'
# tailopsmcp: passing secrets with systemd credentials (LoadCredential=).
#
# Never put secrets (API tokens, SSH keys, passwords) in /etc/tailopsmcp/config.toml or in
# Environment=. Store each secret in a root-only file and let systemd hand it to the service:
#
#   install -d -m 0700 /etc/tailopsmcp/credentials
#   install -m 0600 /dev/stdin /etc/tailopsmcp/credentials/proxmox-token <<<'PVEAPIToken=...'
#   cp /etc/systemd/system/tailopsmcp.service.d/credentials.conf.example \
#      /etc/systemd/system/tailopsmcp.service.d/credentials.conf   # then edit
#   systemctl daemon-reload && systemctl restart tailopsmcp
#
# systemd copies each file into a private, read-only, non-swappable directory that only this
# service can read, and exports its path as $CREDENTIALS_DIRECTORY; the server reads
# $CREDENTIALS_DIRECTORY/NAME. The files under /etc/tailopsmcp/credentials stay root-only.
# (Encrypted alternative: `systemd-creds encrypt` + LoadCredentialEncrypted=.)
#
# This file is an example: systemd ignores it until it is copied to a name ending in `.conf`.
[Service]
LoadCredential=proxmox-token:/etc/tailopsmcp/credentials/proxmox-token
LoadCredential=ssh-key:/etc/tailopsmcp/credentials/ssh-key
TAILOPSMCP_EMBEDDED_EOF
}

embedded_config() {
  # embed: config.example.toml
  cat <<'TAILOPSMCP_EMBEDDED_EOF'
# tailopsmcp configuration — every key, with its default.
#
# Default location: /etc/tailopsmcp/config.toml (override with --config or TAILOPSMCP_CONFIG).
# Precedence: command-line flag > TAILOPSMCP_* environment variable > this file > default.
# Unknown keys are errors: `tailopsmcp check-config` reports them with the key name.

[server]
# TCP port on each tailnet address. Flag --port, env TAILOPSMCP_PORT.
port = 8471
# Tailnet addresses to listen on. Empty (the default) = every address tailscaled reports for
# this node (IPv4 and IPv6), re-read when they change. Only 100.64.0.0/10 and fd7a:115c:a1e0::/48
# are accepted: tailopsmcp never listens outside the tailnet.
listen = []
# Extra names accepted in the HTTP Host header, besides this node's tailnet IPs, MagicDNS name
# and short name (e.g. a Tailscale Services name such as "mcp.tail1234.ts.net"). Any other Host
# gets 403 (DNS-rebinding guard).
extra_hosts = []
# Browser origins allowed to call. MCP clients send no Origin; by default any request carrying
# an Origin header is refused (a web page must not drive your fleet with your identity).
allowed_origins = []
# Accept calls from this server's own tailnet node (connections from this host to its own
# tailnet IP). Off by default: such calls would carry the server host's identity, not a person's.
allow_self = false
# Keep MCP sessions (Mcp-Session-Id) for clients on protocol versions before 2026-07-28. Each
# session is bound to the principal that created it. 2026-07-28 clients are always stateless.
sessions = true
# Largest accepted request body, in bytes (larger: 413).
max_body_bytes = 1048576
# Seconds a client has to send a request's headers. The same limit closes a keep-alive
# connection that waits this long for its next request (hyper measures both from the moment
# it starts waiting for a request head).
header_timeout_secs = 30
# Seconds a client has, once a request's headers are in, to send its whole body (1 MiB at most:
# see max_body_bytes). A body still incomplete then gets 408 and the connection is closed.
body_timeout_secs = 30
# Seconds one TCP connection may reuse its whois answer (0 = whois every request; at most 30).
identity_cache_secs = 2
# Client connections open at once, over every listener (1..65536). One more is closed as soon as
# it is accepted: nothing read, no whois, no audit row (a warning in the log at most every 10 s).
# The unit's LimitNOFILE=4096 leaves room for the default plus the database, journald, targets
# and child processes; raise both together.
max_connections = 1024
# Of those, open at once from one caller address (its tailnet IP; on the Service listener the
# caller the PROXY header names), so one address cannot take them all. Over it, a connection is
# closed the same way. Default 64 (or max_connections when lower).
max_connections_per_address = 64

[tailscale]
# tailscaled's LocalAPI socket. Flag --socket, env TAILOPSMCP_SOCKET.
socket = "/run/tailscale/tailscaled.sock"
# The app capability name that carries tailopsmcp grants in your tailnet policy file.
# Flag --capability, env TAILOPSMCP_CAPABILITY.
capability = "tailopsmcp.dev/cap/tailopsmcp"
# How long a whois may take before the request is refused (fail closed).
whois_timeout_ms = 2000

[audit]
# SQLite audit database. Flag --database, env TAILOPSMCP_DATABASE.
database = "/var/lib/tailopsmcp/tailopsmcp.db"
# Argument names whose values are replaced by "[REDACTED]" in audit rows, in addition to the
# built-in secret-looking names (password, token, secret, api_key, private_key, ...).
redact_fields = []
# Mirror every audit event to journald (SYSLOG_IDENTIFIER=tailopsmcp-audit) when the journal
# socket exists.
journald = true
# Identical refusals (same caller, or peer address for unknown peers; method, tool, target and
# reason) within this many seconds become one row plus a summary row with their count and time
# span, so a refused flood cannot fill the disk. 0: every refusal gets its own row; at most 3600.
refusal_window_secs = 10

[service]
# Tailscale Services (a stable name such as mcp.<tailnet>.ts.net): set `name` to run a second
# listener on `listen` (loopback only) behind (tailscale v1.92 or later)
#   tailscale serve --service=svc:NAME --tls-terminated-tcp=443 --proxy-protocol=2 tcp://127.0.0.1:8472
# Every connection there must begin with a PROXY v2 header carrying the real caller's address,
# which is then whois-ed with svc_name; connections without one are refused. The Service's
# MagicDNS name joins the Host allow-list. Empty (the default) = no Service listener.
name = ""
listen = "127.0.0.1:8472"
# Only tailscaled may name a caller: any local user can connect to a loopback port, so before
# reading a byte the server asks the kernel (sock_diag) which uid owns the connecting socket and
# serves only this one (tailscaled runs as root; set its uid if yours does not). Anything else
# (another uid, a socket already closed, an unknown owner) is closed and audited with its uid.
tailscaled_uid = 0
# Listen on this unix socket instead of `listen` (created 0660; a stale socket from an earlier
# run is replaced; the unit's RuntimeDirectory is /run/tailopsmcp), checking the peer with
# SO_PEERCRED against tailscaled_uid, e.g. "/run/tailopsmcp/service.sock". NOT usable with
# `tailscale serve` yet: it forwards TCP to unix:/PATH targets since v1.102.0 but refuses
# --proxy-protocol for them ("PROXY protocol is not supported with unix socket targets", still
# so in v1.103), and without the PROXY header no caller can be identified. Unset (the default) =
# the loopback `listen` above.
# socket = "/run/tailopsmcp/service.sock"

[tools]
# Which tools this server offers at all; a tool filtered out here is never listed or callable,
# whatever a caller's grants say. Names are checked at start-up (`tailopsmcp check-config`).
# Offer only read-only tools (nothing that can change the host is even registered).
read_only = false
# When non-empty, offer only these tools, e.g. ["whoami", "system_status"].
enable = []
# Never offer these tools, e.g. ["packages_install"].
disable = []

[files]
# Directories the files_* tools may read beneath (absolute, without symlinks in the path). None
# by default: every files_* call is refused until you list some. Paths are resolved by the kernel
# beneath the root (openat2 RESOLVE_BENEATH): `..` or a symlink leading out of a root is refused.
# Never read, whatever the roots: /proc, /sys and other kernel file systems, and this server's
# own config file, audit database, credentials directory and targets' secret files.
roots = []                       # e.g. ["/srv", "/etc/nginx"]
# Deny patterns (`*` and `?`, case-insensitive, matched against every path component) added to
# the built-in ones, which always apply: .ssh .gnupg .password-store .aws .kube .docker id_rsa*
# id_dsa* id_ecdsa* id_ed25519* *.key *_key *.pem *.p12 *.pfx *.jks *.keystore *.kdbx shadow
# shadow- gshadow gshadow- .env .env.* *.env .netrc .pgpass .git-credentials .htpasswd
# credentials credentials.* secrets *-secrets *.keytab private_key* shadow.* gshadow.* opasswd
# wireguard wg*.conf *.ovpn .my.cnf debian.cnf .npmrc .pypirc tailscaled.state
deny = []                        # e.g. ["*.bak", "wp-config.php"]
# The most bytes one files_read returns and one files_tail scans (1024 to 16777216).
max_read_bytes = 262144
# Read regular files that have more than one hard link. Off by default: a hard link inside a
# root can give a file from anywhere on the same file system a name there, and no path check
# sees that. files_stat and files_list still show such files with their link count;
# files_search skips their contents (counted). The [logs] roots always refuse them.
allow_hardlinks = false

[logs]
# Directories logs_tail and logs_analyze may read log files beneath (same safe resolution and
# built-in deny patterns as [files]). The journal tools need no root: the server reads the
# journal with journalctl (its user needs the systemd-journal group for system entries).
roots = ["/var/log"]
deny = []
[stacks]
# Compose stacks on this host (stacks_* tools), driven by `docker compose` (v2) or, when that is
# missing, `docker-compose`, with `git` for checkouts. Needs Docker access (install.sh --docker,
# ROOT-EQUIVALENT) and a compose CLI: Debian's `docker-compose` or Docker's compose plugin.
# One directory per stack. The default lies in the service's StateDirectory, the one place the
# hardened unit may write; for Dockge's layout set "/opt/stacks" and add a drop-in with
# ReadWritePaths=/opt/stacks (hand-made stacks there show up in stacks_list/status too).
dir = "/var/lib/tailopsmcp/stacks"
# Where stacks_deploy may clone from: host names for https/http/ssh/git URLs (any port), and
# "file:///PATH" for local repositories under PATH. Empty (the default) = deploying from git is
# refused. Whoever can push to these repositories can run containers (root-equivalent) here.
allowed_git_hosts = []
# allowed_git_hosts = ["github.com", "git.lan", "file:///srv/git"]
# The engine compose talks to (unix:///PATH; remote engines are `docker` targets).
docker_host = "unix:///var/run/docker.sock"
# The compose command; empty = `docker compose` if it answers, else `docker-compose`.
compose_command = []
# compose_command = ["/usr/local/bin/docker-compose"]
# Time one git or compose command (clone, pull, up) may take, 1-3600.
timeout_secs = 600
[network]
# Destinations `network_http_probe` may fetch from: host names ("nas.lan"), "*.domain" (any name
# under it, e.g. "*.tail1234.ts.net"), IP addresses and CIDRs ("192.168.1.0/24",
# "100.64.0.0/10"). Every address a name resolves to must lie in an address rule, or, when the
# name matches a name rule, be public: a name rule never admits loopback, private (RFC 1918, ULA),
# tailnet/CGNAT (100.64.0.0/10, fd7a:115c:a1e0::/48), link-local or other special-purpose
# addresses, nor this node's own addresses, so whoever answers for the name in DNS cannot aim
# the probe at internal services; list those networks as CIDRs to reach them.
# Empty (the default) = the probe refuses every destination.
# Whatever this list says, the probe refuses cloud metadata services (169.254.169.254,
# fd00:ec2::254, metadata.google.internal, ...), unspecified/multicast addresses, and
# link-local addresses unless allow_link_local is set; it checks the addresses a name resolves
# to and connects to the checked address, so DNS cannot swap it afterwards.
http_allow = []
# Permit link-local destinations (169.254.0.0/16, fe80::/10) that an address rule lists;
# metadata addresses stay refused.
allow_link_local = false
# DNS servers ("IP" or "IP:PORT") the network tools resolve names with and `network_dns_lookup`
# asks by default, e.g. ["100.100.100.100"] (Tailscale's MagicDNS resolver). Names are asked
# fully qualified (no search domains: write "nas.tail1234.ts.net", not "nas"). Empty = the
# system's resolver (/etc/hosts, /etc/resolv.conf, search domains).
dns_servers = []
[approvals]
# What a call needs before it runs, by the tool's risk level (shown in `tools/list` as
# `_meta` risk): "none" (runs at once), "confirm" (the calling client asks its user yes/no with
# exactly what will run; a client that cannot ask is refused, never waved through; this is the
# client's yes, not a second person) or "two_person" (the call is recorded as a pending request
# with a short id; a *different* person holding approvals:control approves it with the
# `approvals_decide` tool or `tailopsmcp approvals approve ID` on this host; the requester's
# next call with the same tool, target and arguments then runs once).
# How long a two-person request lives, from the call that asked to the call that runs it.
expiry_secs = 900
# How long a confirmation waits for the client's user (and how long a 2026-07-28 request
# state stays valid).
confirm_timeout_secs = 300
# A two-person call whose client sent a progress token may wait this long for the decision
# (with progress notifications) and then run at once; 0 = answer "pending" immediately (the
# requester calls again after the approval). At most 3600 and at most expiry_secs.
wait_secs = 0

[approvals.risk]
low = "none"           # reads
moderate = "none"      # restart-like
high = "confirm"       # remove, deploy, upgrade
critical = "two_person" # install packages, anything root-equivalent

[approvals.tools]
# Per-tool modes override the risk level, e.g.:
# services_restart = "two_person"
# (The approvals_* tools themselves never need an approval.)

[limits]
# Tool calls in flight on this server at once; more are refused with "retry after 1 s". A call
# takes its slot only to run: one waiting for a confirmation or a second person holds none.
max_in_flight = 64
# Tool calls of one caller in flight at once. On each target a caller also holds at most half
# of the target's `max_concurrent` slots (at least one), so one caller's slow calls always
# leave room for others. Past either, a call is refused at once with "retry after 1 s".
max_in_flight_per_principal = 8
# MCP sessions one caller may hold (each costs ~40 KiB). A new one past this closes the caller's
# least recently active session with no call in flight.
max_sessions_per_principal = 16

# Refusals at the identity layer (no tailnet identity, Host not allowed, the server's own node,
# another caller's session) per peer address: past `burst`, refilled at `per_minute`, the
# address is answered 429 with Retry-After without asking tailscaled.
[limits.refusals]
burst = 20
per_minute = 60

# Per-caller token buckets by risk level: up to `burst` calls at once, refilled at
# `per_minute`. Every call is charged, denied ones too (an unknown tool as `low`). A refused
# call says after how many seconds to retry (also in the result's `_meta` as
# `tailopsmcp/retryAfterSecs`) and is audited.
[limits.rate.low]
burst = 60
per_minute = 600
[limits.rate.moderate]
burst = 20
per_minute = 60
[limits.rate.high]
burst = 10
per_minute = 20
[limits.rate.critical]
burst = 5
per_minute = 10
[services]
# Units the changing services tools (services_start/stop/restart/reload/enable/disable) may act on:
# exact names ("nginx" = "nginx.service") or globs with * and ?, e.g. ["nginx", "app-*.service"].
# Empty (the default) = none. Reading (services_list, services_status) covers every unit.
# The server runs unprivileged: after changing this list, regenerate the polkit rule that lets
# the `tailopsmcp` user start/stop these units as well:
#   tailopsmcp polkit-rules > /etc/polkit-1/rules.d/50-tailopsmcp.rules
# enable/disable and apt run in the root helper tailopsmcp-helper@.service, which checks this
# same list in this file again.
units = []
# How long the server waits for the root helper (apt upgrade/install, enable/disable), seconds.
helper_timeout_secs = 900

# Local grants add to the grants from your tailnet policy file's app capability.
# match:   "user:LOGIN" (a user-owned node of this login), "tag:NAME" (a tagged node with this
#          tag), "node-id:STABLEID" (one node by its StableID; "node:STABLEID" too, when the value
#          looks like one: nXXXXCNTRL or decimal), or "*" (every tailnet caller).
#          Nodes are named by StableID, never by name: a removed node's name passes to whichever
#          machine registers it next. `tailopsmcp whois IP` prints the StableID (`node id`), so do
#          `tailscale status --json` (`ID`) and `headscale nodes list` (headscale's are decimal).
# scopes:  "AREA:LEVEL" with AREA one of system, logs, files, network, containers, stacks,
#          services, packages, inventory, targets, audit, approvals and LEVEL one of read,
#          control, admin (admin includes control includes read); "AREA:*" = AREA:admin;
#          or a bundle: monitor, operate, configure, manage, admin.
# targets: target ids or globs ("*", "docker-*"); default ["local"].
#
# This one lets the README's dev-mode identity look around; delete it on a real host.
[[grant]]
match = "user:alice@example.com"
scopes = ["monitor"]
targets = ["local"]

# [[grant]]
# match = "tag:ci"
# scopes = ["system:read", "services:control"]
# targets = ["local"]

# [[grant]]
# match = "node-id:nQmK8XyZp711CNTRL"   # alice-laptop, as `tailopsmcp whois 100.101.102.103` shows it
# scopes = ["files:read"]
# targets = ["local"]

# Targets: the systems tools run against. `local` (this host) always exists; every tool takes
# `target = "ID"` (default "local"), and most take `targets = ["ID", "group:NAME"]` to run on
# several at once. A call needs the scope from the caller's grants AND from the target's own
# `scopes` ceiling (omitted = no ceiling beyond the grants).
#
# [[target]]
# id = "nas"                    # lowercase letters, digits, - _ .
# kind = "ssh"                  # local | ssh | docker | http
# scopes = ["monitor"]          # the most anyone may do here
# groups = ["homelab"]          # for `targets = ["group:homelab"]`
# timeout_secs = 30             # per operation, connecting included
# max_concurrent = 4            # operations in flight on this target (at most sshd's MaxSessions, 10)
# max_output_bytes = 262144     # output kept per stream; the rest is counted and cut
# [target.ssh]                  # settings for the kind: [target.ssh], [target.docker] or [target.http]
# host = "nas.tail1234.ts.net"
# port = 22
# user = "ops"
# key_file = "nas_ed25519"      # OpenSSH private key; relative = from $CREDENTIALS_DIRECTORY
# # agent = true                # or use the agent at $SSH_AUTH_SOCK
# known_hosts = "/etc/tailopsmcp/known_hosts"   # the host key must be listed here...
# # host_key_fingerprint = "SHA256:..."         # ...or pinned here; unknown or changed keys are refused
# # trust_on_first_use = false  # only if set: accept the key once and append it to known_hosts when
#                               # that file has no entry for the host (another key of any type = changed)
# sudo = "none"                 # or { allow = ["systemctl"] }: programs run under `sudo -n`
#
# [[target]]                  # the containers_* tools run on docker targets only; for this host's
# id = "docker-nas"             # engine use endpoint unix:///var/run/docker.sock (install.sh --docker).
# kind = "docker"               # Image pulls and updates must finish within timeout_secs: raise it
#                               # (e.g. 300) for large images.
# [target.docker]
# endpoint = "tcp://nas.tail1234.ts.net:2376"   # or "unix:///var/run/docker.sock" (default)
# tls_ca = "/etc/tailopsmcp/docker/ca.pem"       # tcp:// needs TLS: CA, client cert and key
# tls_cert = "/etc/tailopsmcp/docker/cert.pem"
# tls_key = "docker-key.pem"                     # relative: from $CREDENTIALS_DIRECTORY
# insecure_plain_tcp = false                     # plain tcp:// only when set (root-equivalent access!)
#
# [[target]]                    # a Proxmox VE API: the proxmox_* tools run on it
# id = "pve"
# kind = "http"
# [target.http]
# base_url = "https://pve.lan:8006/api2/json"
# auth_header = "Authorization"
# auth_prefix = "PVEAPIToken="
# token_file = "proxmox-token"                   # holds `user@realm!tokenid=secret`; relative: from $CREDENTIALS_DIRECTORY
# # token_env = "PVE_TOKEN"                      # or an environment variable's name (kept out of
#                                                # every program the server starts)
# allowed_methods = ["GET"]                      # default ["GET"]; add "POST" for guest actions and snapshots
# allowed_path_prefixes = ["/nodes", "/cluster"] # whole path segments; empty = all under base_url
# ca_file = "/etc/tailopsmcp/pve-ca.pem"         # an extra CA to trust
# insecure_skip_verify = false
# max_response_bytes = 1048576
# health_path = "/version"                       # what `targets_check` requests

TAILOPSMCP_EMBEDDED_EOF
}

# The default config is the example with its dev-mode grant (for the README's
# `--dev-identity alice@example.com`) commented out: a real host starts with no local grants.
default_config() {
  embedded_config | awk '
    /^\[\[grant\]\]$/ && !done { held = $0; next_is_check = 1; next }
    next_is_check {
      next_is_check = 0
      if ($0 ~ /^match = "user:alice@example\.com"$/) { print "# " held; print "# " $0; dev = 1; done = 1; next }
      print held
    }
    dev && /^(scopes|targets) = / { print "# " $0; next }
    { dev = 0; print }'
}

# ---------------------------------------------------------------------------------------------
# Arguments.

action=install
purge=0
binary=""
release_url="${TAILOPSMCP_RELEASE_URL:-$DEFAULT_RELEASE_URL}"
sha256="${TAILOPSMCP_SHA256:-}"
skip_tailscale=0
authkey="${TS_AUTHKEY:-}"
tags="${TS_TAGS:-}"
ts_hostname=""
docker=keep
ignore_os=0
# Tailscale Services (`--service svc:NAME`): see setup_tailscale_service.
service=keep
service_name=""
service_port=8472

need_value() {
  if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
}

while [ "$#" -gt 0 ]; do
  case "$1" in
    --upgrade) action=upgrade ;;
    --uninstall) action=uninstall ;;
    --purge) purge=1 ;;
    --binary) need_value "$@"; binary="$2"; shift ;;
    --binary=*) binary="${1#*=}" ;;
    --release-url) need_value "$@"; release_url="$2"; shift ;;
    --release-url=*) release_url="${1#*=}" ;;
    --sha256) need_value "$@"; sha256="$2"; shift ;;
    --sha256=*) sha256="${1#*=}" ;;
    --skip-tailscale) skip_tailscale=1 ;;
    --authkey | --auth-key) need_value "$@"; authkey="$2"; shift ;;
    --authkey=* | --auth-key=*) authkey="${1#*=}" ;;
    --advertise-tags) need_value "$@"; tags="$2"; shift ;;
    --advertise-tags=*) tags="${1#*=}" ;;
    --hostname) need_value "$@"; ts_hostname="$2"; shift ;;
    --hostname=*) ts_hostname="${1#*=}" ;;
    --docker) docker=add ;;
    --no-docker) docker=remove ;;
    --ignore-os) ignore_os=1 ;;
    --service) need_value "$@"; service=add; service_name="$2"; shift ;;
    --service=*) service=add; service_name="${1#*=}" ;;
    --service-port) need_value "$@"; service_port="$2"; shift ;;
    --service-port=*) service_port="${1#*=}" ;;
    --no-service) service=remove ;;
    --print-embedded)
      # For tests/scripts/install.bats: print an embedded file.
      need_value "$@"
      case "$2" in
        unit) embedded_unit ;;
        helper) embedded_helper_unit ;;
        docker) embedded_docker_dropin ;;
        credentials) embedded_credentials_example ;;
        config) embedded_config ;;
        default-config) default_config ;;
        *) die "unknown embedded file: $2" ;;
      esac
      exit 0 ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
  shift
done

[ "$purge" = 0 ] || [ "$action" = uninstall ] || die "--purge only goes with --uninstall"

# ---------------------------------------------------------------------------------------------
# Steps.

check_root() {
  if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (e.g. sudo bash install.sh ...)"
  fi
}

check_os() {
  [ -r "$OS_RELEASE" ] || die "cannot read $OS_RELEASE: not a Debian or Ubuntu system?"
  local id version codename
  # shellcheck disable=SC1090
  id="$(. "$OS_RELEASE" && printf '%s' "${ID:-}")"
  # shellcheck disable=SC1090
  version="$(. "$OS_RELEASE" && printf '%s' "${VERSION_ID:-}")"
  # shellcheck disable=SC1090
  codename="$(. "$OS_RELEASE" && printf '%s' "${VERSION_CODENAME:-}")"
  OS_ID="$id"
  OS_CODENAME="$codename"
  case "$id:$version" in
    debian:12 | debian:13 | ubuntu:22.04 | ubuntu:24.04)
      msg "OS: $id $version ($codename)" ;;
    *)
      if [ "$ignore_os" = 1 ]; then
        warn "unsupported OS $id $version; continuing because of --ignore-os"
      else
        die "unsupported OS '$id $version': supported are Debian 12/13 and Ubuntu 22.04/24.04 (--ignore-os to try anyway)"
      fi ;;
  esac
  command -v systemctl >/dev/null || die "systemctl not found: tailopsmcp runs as a systemd service"
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

install_tailscale() {
  if command -v tailscale >/dev/null; then
    msg "Tailscale: already installed"
    return
  fi
  if [ "$skip_tailscale" = 1 ]; then
    warn "Tailscale is not installed (--skip-tailscale): tailopsmcp waits for tailscaled"
    return
  fi
  [ -n "${OS_CODENAME:-}" ] || die "no VERSION_CODENAME in $OS_RELEASE: cannot pick Tailscale's apt repository"
  msg "Tailscale: installing from its official apt repository (pkgs.tailscale.com, $OS_ID $OS_CODENAME)"
  if ! command -v curl >/dev/null; then
    apt-get update -q
    apt_install curl ca-certificates
  fi
  local base="https://pkgs.tailscale.com/stable/$OS_ID/$OS_CODENAME"
  install -d -m 0755 "$(dirname "$TS_KEYRING")" "$(dirname "$TS_LIST")"
  curl -fsSL "$base.noarmor.gpg" -o "$TS_KEYRING.tmp"
  mv -f "$TS_KEYRING.tmp" "$TS_KEYRING"
  chmod 0644 "$TS_KEYRING"
  curl -fsSL "$base.tailscale-keyring.list" -o "$TS_LIST.tmp"
  mv -f "$TS_LIST.tmp" "$TS_LIST"
  apt-get update -q
  apt_install tailscale
  systemctl enable --now tailscaled.service
}

# BackendState from tailscaled ("" when tailscale or tailscaled is not there).
ts_backend_state() {
  command -v tailscale >/dev/null || return 0
  tailscale status --json --peers=false 2>/dev/null |
    sed -n 's/^[[:space:]]*"BackendState":[[:space:]]*"\([A-Za-z]*\)".*/\1/p' | head -n 1 || true
}

tailscale_up() {
  if [ -z "$authkey" ]; then
    if [ -n "$tags" ] || [ -n "$ts_hostname" ]; then
      warn "--advertise-tags/--hostname are only used with --authkey"
    fi
    return 0
  fi
  command -v tailscale >/dev/null || die "--authkey given but Tailscale is not installed (drop --skip-tailscale)"
  if [ "$(ts_backend_state)" = Running ]; then
    msg "Tailscale: already up; not running \`tailscale up\` again"
    return
  fi
  local keyarg tmpkey=""
  case "$authkey" in
    file:*) keyarg="$authkey" ;;
    *)
      # Pass the key through a root-only file, not the command line (visible in ps).
      tmpkey="$(mktemp)"
      TMPFILES+=("$tmpkey")
      chmod 0600 "$tmpkey"
      printf '%s' "$authkey" >"$tmpkey"
      keyarg="file:$tmpkey" ;;
  esac
  local args=(up "--auth-key=$keyarg")
  [ -z "$tags" ] || args+=("--advertise-tags=$tags")
  [ -z "$ts_hostname" ] || args+=("--hostname=$ts_hostname")
  msg "Tailscale: tailscale up${tags:+ --advertise-tags=$tags}${ts_hostname:+ --hostname=$ts_hostname}"
  local rc=0
  tailscale "${args[@]}" || rc=$?
  [ -z "$tmpkey" ] || rm -f "$tmpkey"
  [ "$rc" = 0 ] || die "\`tailscale up\` failed (exit $rc); fix it and re-run this installer"
}

# Tailscale Services stable name (`--service svc:NAME`): a drop-in turns on the server's
# loopback Service listener (PROXY v2 required; TAILOPSMCP_SERVICE / TAILOPSMCP_SERVICE_LISTEN,
# so the operator's config file is not edited), and `tailscale serve` forwards the Service to it
# with the real caller's address in a PROXY v2 header. The server serves only connections whose
# socket belongs to tailscaled's uid (`[service] tailscaled_uid`, default root), so no other local
# user can claim a caller. It stays on loopback TCP, not a unix socket: `tailscale serve` takes
# unix:/PATH targets since v1.102.0 but refuses --proxy-protocol for them (through v1.103), and
# without that header there is no caller. The Service itself is defined, and this host approved
# for it, in the admin console or the policy file (README).
service_dropin_content() {
  printf '%s\n' \
    "# Written by install.sh --service; remove with install.sh --no-service." \
    "[Service]" \
    "Environment=TAILOPSMCP_SERVICE=$service_name" \
    "Environment=TAILOPSMCP_SERVICE_LISTEN=127.0.0.1:$service_port"
}

setup_tailscale_service() {
  local dropin="$DROPIN_DIR/tailscale-service.conf"
  case "$service" in
    keep)
      [ ! -e "$dropin" ] || msg "Tailscale Service drop-in present (kept; --no-service removes it)"
      return 0 ;;
    remove)
      if [ -e "$dropin" ]; then
        rm -f "$dropin"
        msg "removed $dropin (Tailscale Service listener); 'tailscale serve --service=svc:NAME off' stops the forwarding"
        systemctl daemon-reload
        units_changed=1
      fi
      return 0 ;;
  esac
  [[ "$service_name" =~ ^svc:[a-z0-9][a-z0-9-]*$ ]] ||
    die "--service needs a Service name like svc:mcp, not '$service_name'"
  { [[ "$service_port" =~ ^[0-9]+$ ]] && [ "$service_port" -ge 1 ] && [ "$service_port" -le 65535 ]; } ||
    die "--service-port needs a port number, not '$service_port'"
  write_if_changed service_dropin_content "$dropin" 0644
  if [ "$file_changed" = 1 ]; then
    systemctl daemon-reload
    units_changed=1
  fi
  local serve=(serve "--service=$service_name" --tls-terminated-tcp=443 --proxy-protocol=2 "tcp://127.0.0.1:$service_port")
  if command -v tailscale >/dev/null && [ "$(ts_backend_state)" = Running ]; then
    tailscale "${serve[@]}" ||
      die "'tailscale ${serve[*]}' failed: is this host tagged and approved for $service_name? (README: Tailscale Services)"
    msg "Tailscale Service $service_name forwards to 127.0.0.1:$service_port (PROXY v2; only tailscaled's uid is served there)"
  else
    warn "tailscale is not running here; once it is, run: tailscale ${serve[*]}"
  fi
  msg "define $service_name in the admin console, tag this host and approve it (or autoApprovers), and grant clients dst [\"$service_name\"] (README)"
}

create_user() {
  if getent passwd "$SVC_USER" >/dev/null; then
    msg "user $SVC_USER: exists"
  else
    msg "user $SVC_USER: creating (system user, no login, no home)"
    useradd --system --user-group --home-dir /var/lib/tailopsmcp --no-create-home \
      --shell /usr/sbin/nologin --comment "tailopsmcp MCP server" "$SVC_USER"
  fi
  getent group systemd-journal >/dev/null ||
    warn "group systemd-journal not found: the log tools will not read the journal"
}

create_dirs() {
  install -d -m 0755 "$CONF_DIR"
  install -d -m 0750 "$STATE_DIR"
  chown "$SVC_USER:$SVC_USER" "$STATE_DIR"
}

# Puts the new binary at $1 (a temp file): --binary, or a download checked against --sha256.
fetch_binary() {
  local out="$1"
  if [ -n "$binary" ]; then
    [ -f "$binary" ] || die "--binary $binary: no such file"
    cp -f "$binary" "$out"
  elif [ -n "$release_url" ]; then
    [ -n "$sha256" ] || die "--release-url needs --sha256 SUM: refusing to install an unverified download"
    msg "downloading $release_url"
    curl -fsSL "$release_url" -o "$out" || die "download failed: $release_url"
    local got
    got="$(sha256sum "$out" | cut -d' ' -f1)"
    [ "$got" = "${sha256,,}" ] || die "checksum mismatch for $release_url: expected $sha256, got $got"
    msg "checksum ok ($got)"
  else
    die "no binary to install: no tailopsmcp release is published yet. Build one (cargo build --release) and pass --binary target/release/tailopsmcp, or pass --release-url URL --sha256 SUM"
  fi
}

# Installs the binary atomically (rename: safe while the old one runs). Sets binary_changed.
install_binary() {
  local tmp
  install -d -m 0755 "$(dirname "$BIN")"
  tmp="$(mktemp "$BIN.XXXXXX")"
  TMPFILES+=("$tmp")
  fetch_binary "$tmp"
  chmod 0755 "$tmp"
  if [ -f "$BIN" ] && cmp -s "$tmp" "$BIN"; then
    rm -f "$tmp"
    msg "binary $BIN: unchanged"
    binary_changed=0
  else
    chown root:root "$tmp"
    mv -f "$tmp" "$BIN"
    msg "binary $BIN: installed"
    binary_changed=1
  fi
}

# write_if_changed CONTENT_FUNCTION DEST MODE: sets file_changed.
write_if_changed() {
  local fn="$1" dest="$2" mode="$3" tmp
  tmp="$(mktemp "$dest.XXXXXX")"
  TMPFILES+=("$tmp")
  "$fn" >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest"; then
    rm -f "$tmp"
    file_changed=0
  else
    mv -f "$tmp" "$dest"
    msg "wrote $dest"
    file_changed=1
  fi
}

install_config() {
  if [ -e "$CONF" ]; then
    msg "config $CONF: exists, left as it is"
  else
    local tmp
    tmp="$(mktemp "$CONF.XXXXXX")"
    TMPFILES+=("$tmp")
    default_config >"$tmp"
    chmod 0640 "$tmp"
    chown "root:$SVC_USER" "$tmp"
    mv -f "$tmp" "$CONF"
    msg "config $CONF: written from the example (edit the capability name and grants)"
  fi
  "$BIN" check-config --config "$CONF" >/dev/null ||
    die "$CONF does not validate: see \`tailopsmcp check-config --config $CONF\`"
}

polkit_rule() {
  "$BIN" polkit-rules --config "$CONF"
}

install_units() {
  units_changed=0
  install -d -m 0755 "$UNIT_DIR" "$DROPIN_DIR"
  write_if_changed embedded_unit "$UNIT" 0644
  [ "$file_changed" = 0 ] || units_changed=1
  # The privileged path of the services/packages tools: the root helper template and the
  # polkit rule generated from [services] units (ARCHITECTURE.md, "Privilege").
  write_if_changed embedded_helper_unit "$HELPER_UNIT" 0644
  [ "$file_changed" = 0 ] || units_changed=1
  if [ -d "$POLKIT_DIR" ]; then
    write_if_changed polkit_rule "$POLKIT_RULE" 0644
  else
    msg "polkit: $POLKIT_DIR not found; the services/packages tools that change things need polkitd (apt-get install polkitd, then re-run)"
  fi
  write_if_changed embedded_credentials_example "$DROPIN_DIR/credentials.conf.example" 0644
  local dropin="$DROPIN_DIR/docker-access.conf"
  case "$docker" in
    add)
      getent group docker >/dev/null ||
        die "--docker: group 'docker' not found; install Docker first, then re-run with --docker"
      warn "--docker: the docker group is ROOT-EQUIVALENT; tailopsmcp's container tools act with root power on this host"
      write_if_changed embedded_docker_dropin "$dropin" 0644
      [ "$file_changed" = 0 ] || units_changed=1 ;;
    remove)
      if [ -e "$dropin" ]; then
        rm -f "$dropin"
        msg "removed $dropin (Docker access)"
        units_changed=1
      fi ;;
    keep)
      [ ! -e "$dropin" ] || msg "Docker access drop-in present (kept; --no-docker removes it)" ;;
  esac
  if [ "$units_changed" = 1 ]; then
    systemctl daemon-reload
  fi
}

start_service() {
  local was_active=0
  if systemctl is-active --quiet "$SERVICE"; then was_active=1; fi
  systemctl enable --now "$SERVICE"
  # A service that was already running picks up a new binary or unit only on restart.
  if [ "$was_active" = 1 ] &&
    { [ "$action" = upgrade ] || [ "$binary_changed" = 1 ] || [ "$units_changed" = 1 ]; }; then
    msg "restarting $SERVICE"
    systemctl restart "$SERVICE"
  fi
}

config_port() {
  local port
  port="$(awk '
    /^\[/ { in_server = ($0 ~ /^\[server\][[:space:]]*$/) }
    in_server && /^port[[:space:]]*=/ { sub(/^port[[:space:]]*=[[:space:]]*/, ""); sub(/[[:space:]#].*/, ""); print; exit }
  ' "$CONF" 2>/dev/null || true)"
  case "$port" in '' | *[!0-9]*) port=8471 ;; esac
  printf '%s' "$port"
}

wait_healthy() {
  local port state i listening=0
  port="$(config_port)"
  state="$(ts_backend_state)"
  for ((i = 0; i < HEALTH_TIMEOUT; i++)); do
    if systemctl is-active --quiet "$SERVICE"; then
      if [ "$state" != Running ]; then
        # No tailnet to listen on yet: running and waiting for tailscaled is healthy.
        sleep 1
        systemctl is-active --quiet "$SERVICE" && break
      elif ! command -v ss >/dev/null; then
        warn "ss (iproute2) not found: not checking the listener"
        break
      elif [ -n "$(ss -ltnH "sport = :$port" 2>/dev/null)" ]; then
        listening=1
        break
      fi
    fi
    sleep 1
  done
  if ((i >= HEALTH_TIMEOUT)); then
    journalctl -u "$SERVICE" -n 30 --no-pager >&2 || true
    die "$SERVICE is not healthy after ${HEALTH_TIMEOUT}s (see the journal above: journalctl -u tailopsmcp)"
  fi
  if [ "$listening" = 1 ]; then
    msg "$SERVICE: active, listening on the tailnet (port $port)"
  elif [ "$state" = Running ]; then
    msg "$SERVICE: active"
  else
    msg "$SERVICE: active, waiting for tailscaled (BackendState: ${state:-not running}); run \`tailscale up\`"
  fi
  HEALTH_PORT="$port"
}

print_url() {
  local name="" port="$HEALTH_PORT"
  if command -v tailscale >/dev/null; then
    name="$(tailscale status --json --peers=false 2>/dev/null |
      sed -n 's/^[[:space:]]*"DNSName":[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1 || true)"
    name="${name%.}"
    [ -n "$name" ] || name="$(tailscale ip -4 2>/dev/null | head -n 1 || true)"
  fi
  [ -n "$name" ] || name="<this-node>.<tailnet>.ts.net"
  local url="http://$name:$port/mcp"
  msg "MCP URL: $url"
  cat <<EOF

  Add it to an MCP client, e.g. Claude Code:
    claude mcp add --transport http tailopsmcp $url
  or in a client's JSON config:
    { "mcpServers": { "tailopsmcp": { "type": "http", "url": "$url" } } }

  Callers also need a grant: the tailnet policy file's app capability (see the README) or a
  [[grant]] in $CONF. Check one with: tailopsmcp whois <caller-100.x-address>
  Audit: tailopsmcp audit tail   |   journalctl -u tailopsmcp -t tailopsmcp-audit -f

EOF
}

do_install() {
  check_root
  check_os
  install_tailscale
  tailscale_up
  create_user
  create_dirs
  install_binary
  install_config
  install_units
  setup_tailscale_service
  start_service
  wait_healthy
  print_url
}

do_upgrade() {
  check_root
  check_os
  [ -e "$BIN" ] || [ -e "$UNIT" ] || die "tailopsmcp is not installed here: run install.sh without --upgrade"
  create_user
  create_dirs
  install_binary
  install_config
  install_units
  setup_tailscale_service
  start_service
  wait_healthy
  print_url
}

do_uninstall() {
  check_root
  if [ -e "$UNIT" ]; then
    systemctl disable --now "$SERVICE" || warn "could not stop/disable $SERVICE"
    rm -f "$UNIT"
    msg "removed $UNIT"
  fi
  if [ -d "$DROPIN_DIR" ]; then
    rm -rf "$DROPIN_DIR"
    msg "removed $DROPIN_DIR"
  fi
  for f in "$HELPER_UNIT" "$POLKIT_RULE"; do
    if [ -e "$f" ]; then
      rm -f "$f"
      msg "removed $f"
    fi
  done
  systemctl daemon-reload
  if [ -e "$BIN" ]; then
    rm -f "$BIN"
    msg "removed $BIN"
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$CONF_DIR" "$STATE_DIR"
    msg "purged $CONF_DIR and $STATE_DIR (config and audit database)"
    if getent passwd "$SVC_USER" >/dev/null; then
      userdel "$SVC_USER"
      msg "removed user $SVC_USER"
    fi
  else
    msg "kept $CONF_DIR, $STATE_DIR (audit database) and user $SVC_USER; --uninstall --purge removes them"
  fi
  msg "Tailscale was left installed"
  msg "uninstalled"
}

binary_changed=0
units_changed=0
file_changed=0
HEALTH_PORT=8471
OS_ID=""
OS_CODENAME=""

case "$action" in
  install) do_install ;;
  upgrade) do_upgrade ;;
  uninstall) do_uninstall ;;
esac
