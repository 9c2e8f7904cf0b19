#!/usr/bin/env bash
# Server instructions per `whoami` call, counted by callgrind: a figure that does not move with
# the host's load, for comparing two builds on a noisy machine (wall-clock throughput there
# swings by 30% between runs of the same binary).
#
#   benches/instructions.sh [BINARY]     (default target/release/tailopsmcp; needs valgrind, wrk, curl)
#
# Runs the server under callgrind on a loopback dev listener with a fresh database, loads it with
# wrk (32 connections) on sessions (2025-06-18, one initialized session per connection) and then
# stateless (2026-07-28), and prints user-space instructions per answered call (all threads:
# tokio workers and the audit writer; the kernel's share is not counted). Counters are zeroed
# after a warm-up. Callgrind serializes threads and counts each byte a `rep movsb` copies as an
# instruction, so the figure overstates large copies against their real cost; compare builds
# with it, not wall-clock time. Every call must be answered with 2xx and audited as allowed.
set -euo pipefail

bin=${1:-target/release/tailopsmcp}
secs=${IR_SECS:-6}
port=${IR_PORT:-18471}
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install valgrind wrk curl)" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "no server binary at $bin (cargo build --release)" >&2; exit 2; }

work=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/config.toml" <<EOF
[audit]
database = "$work/audit.db"
[[grant]]
match = "user:bench@example.com"
scopes = ["admin"]
# The default per-principal rate limit (600 low-risk calls a minute) would refuse most of the
# load: a refused call is answered (200, an error result) but is not the call being measured.
[limits.rate.low]
burst = 100000
per_minute = 1000000
# 32 connections of one principal: room for a session each and every call in flight (the
# defaults, 16 sessions and 8 calls a principal, half of the local target's 4 slots, would
# refuse most of them; a caller may hold half of a target's slots).
[limits]
max_in_flight = 1000
max_in_flight_per_principal = 1000
max_sessions_per_principal = 64
[[target]]
id = "local"
kind = "local"
max_concurrent = 256
EOF

url="http://127.0.0.1:$port/mcp"
valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p" "$bin" serve --config "$work/config.toml" \
    --dev-listen "127.0.0.1:$port" --dev-identity bench@example.com > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.5
done
curl -s -o /dev/null "http://127.0.0.1:$port/" || { cat "$work/server.log" >&2; exit 1; }

post() { # HEADERS... -- BODY: POST to /mcp, print the response head
    local args=()
    while [ "$1" != "--" ]; do args+=(-H "$1"); shift; done
    curl -s -D - -o /dev/null -X POST "$url" -H 'Content-Type: application/json' \
        -H 'Accept: application/json, text/event-stream' "${args[@]}" -d "$2"
}

call='{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{}}}'
ids=""
for _ in $(seq 1 32); do
    sid=$(post -- '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"0"}}}' |
        tr -d '\r' | awk 'tolower($1) == "mcp-session-id:" {print $2}')
    [ -n "$sid" ] || { echo "initialize gave no session id" >&2; exit 1; }
    post "Mcp-Session-Id: $sid" 'MCP-Protocol-Version: 2025-06-18' -- \
        '{"jsonrpc":"2.0","method":"notifications/initialized"}' > /dev/null
    ids="$ids\"$sid\","
done

cat > "$work/session.lua" <<EOF
wrk.method = "POST"
wrk.body = '$call'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-06-18"
local ids = { $ids }
local per, window, next_base, n, reqs = 16, 64, 0, 0, {}
function setup(thread) thread:set("base", next_base); next_base = next_base + per end
-- A session can have several calls in flight, and request ids must be unique within a session
-- (the server refuses a reused one): each session's requests cycle through 64 ids.
function init(args)
  for i = 1, per * window do
    wrk.headers["Mcp-Session-Id"] = ids[base + ((i - 1) % per) + 1]
    local body = string.gsub(wrk.body, '"id":1,', '"id":' .. string.format("%d", math.floor((i - 1) / per) + 1) .. ',')
    reqs[i] = wrk.format(nil, nil, nil, body)
  end
end
function request() n = n + 1; return reqs[(n % (per * window)) + 1] end
EOF
cat > "$work/stateless.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"whoami","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"bench","version":"0"},"io.modelcontextprotocol/clientCapabilities":{}}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
wrk.headers["Mcp-Method"] = "tools/call"
wrk.headers["Mcp-Name"] = "whoami"
EOF

echo "server: $bin ($(stat -c %s "$bin") bytes), $secs s of wrk per mode under callgrind"
for mode in session stateless; do
    wrk -t2 -c32 -d2s -s "$work/$mode.lua" "$url" > /dev/null
    callgrind_control -z "$server" > /dev/null 2>&1
    wrk -t2 -c32 -d"${secs}s" -s "$work/$mode.lua" "$url" > "$work/wrk.out"
    callgrind_control -d "$server" > /dev/null 2>&1
    calls=$(awk '/requests in/ {print $1}' "$work/wrk.out")
    if grep -q "Non-2xx" "$work/wrk.out"; then
        cat "$work/wrk.out" >&2
        echo "$mode: some calls were not answered with 2xx" >&2
        exit 1
    fi
    dump=$(ls -v "$work"/cg."$server".* | tail -1)
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    # A refused call is answered with 2xx too: every call must be audited as allowed.
    denied=$("$bin" audit query --config "$work/config.toml" --decision deny --limit 1 --json)
    if [ -n "$denied" ]; then
        echo "$denied" >&2
        echo "$mode: some calls were refused" >&2
        exit 1
    fi
    echo "$mode: $calls calls, $((total / calls)) instructions per call"
done
