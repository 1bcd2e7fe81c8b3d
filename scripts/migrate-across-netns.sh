#!/usr/bin/env bash
# Live migration between two "hosts" on one machine: two network namespaces joined by a veth
# pair (10.200.0.1 and 10.200.0.2), the source kvmts in one and the destination in the other,
# the stream crossing the veth link. Needs root (ip netns), a build (pnpm run build) and the
# reference guest (kvmts guest fetch). See docs/migration.md, "Across hosts".
#
#   sudo scripts/migrate-across-netns.sh
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
kvmts=(node "$here/packages/cli/dist/bin.js")
guest="$("${kvmts[@]}" guest path)"
work="$(mktemp -d /tmp/kvmts-netns-XXXXXX)"
A=kvmts-host-a B=kvmts-host-b

cleanup() {
  [[ -n "${src_pid:-}" ]] && kill "$src_pid" 2>/dev/null || true
  [[ -n "${dst_pid:-}" ]] && kill "$dst_pid" 2>/dev/null || true
  exec 3>&- 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Wait until FILE matches PATTERN (grep -E), up to SECONDS.
wait_for() {
  local file=$1 pattern=$2 seconds=$3
  for ((i = 0; i < seconds * 10; i++)); do
    grep -Eq "$pattern" "$file" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out waiting for /$pattern/ in $file" >&2
  tail -20 "$file" >&2
  return 1
}

echo "== two hosts: $A (10.200.0.1) and $B (10.200.0.2), joined by a veth pair"
ip netns add "$A"
ip netns add "$B"
ip link add veth-a netns "$A" type veth peer name veth-b netns "$B"
ip -n "$A" addr add 10.200.0.1/24 dev veth-a
ip -n "$B" addr add 10.200.0.2/24 dev veth-b
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
done
ip -n "$A" link set veth-a up
ip -n "$B" link set veth-b up

echo "== destination on $B: kvmts run --incoming tcp:10.200.0.2:4444"
ip netns exec "$B" "${kvmts[@]}" run --incoming tcp:10.200.0.2:4444 --mem 256M \
  >"$work/dst.out" 2>"$work/dst.err" </dev/null &
dst_pid=$!
wait_for "$work/dst.err" 'waiting for an incoming migration' 60

echo "== source on $A: the reference guest with a shell and a monitor"
mkfifo "$work/console"
ip netns exec "$A" "${kvmts[@]}" run --kernel "$guest/bzImage" --initrd "$guest/initramfs.cpio.gz" \
  --append 'console=ttyS0 guest.shell=1' --mem 256M --monitor "unix:$work/monitor.sock" \
  <"$work/console" >"$work/src.out" 2>"$work/src.err" &
src_pid=$!
exec 3>"$work/console" # keeps the console open; the shell reads what is written here
wait_for "$work/src.out" 'GUEST-SHELL ready' 600
echo 'i=0; while :; do i=$((i+1)); echo COUNT $i; sleep 1; done &' >&3
echo 'kvmts-dirty 32 20 >/dev/null &' >&3
wait_for "$work/src.out" 'COUNT 3' 60

echo "== migrate over the veth link"
"${kvmts[@]}" monitor "unix:$work/monitor.sock" '{"execute":"migrate","arguments":{"uri":"tcp:10.200.0.2:4444"}}'
wait_for "$work/dst.err" 'the guest runs here now' 120
last_src=$(grep -Eo 'COUNT [0-9]+' "$work/src.out" | tail -1)
wait_for "$work/dst.out" 'COUNT [0-9]+' 30
first_dst=$(grep -Eo 'COUNT [0-9]+' "$work/dst.out" | head -1)
grep -E 'migration completed|downtime:' "$work/src.err"
echo "last on the source: $last_src; first on the destination: $first_dst"
wait "$src_pid" || true
src_pid=
echo "== the guest runs on $B; stopping it"
kill -TERM "$dst_pid"
wait "$dst_pid" || true
dst_pid=
tail -2 "$work/dst.err"
