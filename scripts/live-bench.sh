#!/usr/bin/env bash
# Live capture benchmark: tcpreplay sends a capture from one network namespace into a veth
# pair while `phantomnet run` captures the other end in a second namespace; prints frames
# sent (and failed) by tcpreplay and its rate, frames PhantomNet processed, kernel drops
# (PACKET_STATISTICS), achieved frames/s, PhantomNet's CPU time while the capture was sent
# and its peak RSS. Traffic stays inside the two namespaces, which are removed on exit.
#
# usage: scripts/live-bench.sh [--pps N | --mbps N] [--limit N] [--ring MB] [BENCH.pcap]
#   (no rate: tcpreplay --topspeed; default capture /tmp/bench.pcap)
#   --pps N / --mbps N   rate-limited run, to find the highest rate without drops
#   --limit N            send only the first N frames
#   --ring MB            capture through the TPACKET_V3 ring (capture.ring, ring_mb = MB)
# env:   PHANTOMNET (binary; default target/release/phantomnet, built if missing),
#        CONFIG (default config/phantomnet.toml), MTU (veth MTU, default 9000: larger frames
#        are dropped by the veth and counted by tcpreplay as failed)
# needs: root, iproute2, tcpreplay, curl, python3
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
rate=(--topspeed)
rate_name=topspeed
limit=()
ring_mb=
bench=/tmp/bench.pcap
while [ $# -gt 0 ]; do
  case $1 in
    --pps) rate=("--pps=$2"); rate_name="$2 pps"; shift 2 ;;
    --mbps) rate=("--mbps=$2"); rate_name="$2 Mbps"; shift 2 ;;
    --limit) limit=("--limit=$2"); shift 2 ;;
    --ring) ring_mb=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) bench=$1; shift ;;
  esac
done
pn=${PHANTOMNET:-$here/target/release/phantomnet}
cfg=${CONFIG:-$here/config/phantomnet.toml}
mtu=${MTU:-9000}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, raw sockets)" >&2; exit 2; }
[ -f "$bench" ] || { echo "$bench: no such capture (build it: ../shared/bench/make-bench-pcap.sh $bench)" >&2; exit 2; }
for t in ip tcpreplay curl python3; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
if [ ! -x "$pn" ]; then (cd "$here" && cargo build --release); fi

tag=$$
ns_w=pnbw$tag ns_s=pnbs$tag if_w=pbw$tag if_s=pbs$tag
work=$(mktemp -d)
pn_pid=
cleanup() {
  if [ -n "$pn_pid" ] && kill -0 "$pn_pid" 2>/dev/null; then kill -TERM "$pn_pid" 2>/dev/null || true; fi
  ip netns del "$ns_w" 2>/dev/null || true
  ip netns del "$ns_s" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns_w"
ip netns add "$ns_s"
ip link add "$if_w" type veth peer name "$if_s"
ip link set "$if_w" netns "$ns_w"
ip link set "$if_s" netns "$ns_s"
for pair in "$ns_w $if_w" "$ns_s $if_s"; do
  set -- $pair
  # No addresses and no IPv6: neither end adds frames of its own (ND, MLD) to the count.
  ip netns exec "$1" sysctl -qw "net.ipv6.conf.$2.disable_ipv6=1"
  ip -n "$1" link set "$2" mtu "$mtu" up
  ip -n "$1" link set lo up
done

if [ -n "$ring_mb" ]; then
  # The same config with the ring on; its relative paths made absolute, as it moves.
  dir=$(cd "$(dirname "$cfg")" && pwd)
  sed -e "s|^ring = .*|ring = true|" -e "s|^ring_mb = .*|ring_mb = $ring_mb|" \
      -e "s|\"\.\./|\"$dir/../|g" "$cfg" >"$work/ring.toml"
  cfg=$work/ring.toml
fi
port=8080
ip netns exec "$ns_w" "$pn" --log warn run -i "$if_w" -c "$cfg" --db "$work/pn.db" \
  --serve "127.0.0.1:$port" 2>"$work/pn.log" &
pn_pid=$!   # `ip netns exec` execs the program: this is PhantomNet's pid
status() { ip netns exec "$ns_w" curl -sf --max-time 2 "http://127.0.0.1:$port/api/status"; }
for _ in $(seq 100); do status >/dev/null 2>&1 && break; sleep 0.1; done
status >/dev/null || { echo "phantomnet did not come up:" >&2; cat "$work/pn.log" >&2; exit 1; }

# CPU ticks of PhantomNet so far (user, system), and its capture thread's run-queue wait
# (ns): time it was ready to run but another task had the core.
cpu_ticks() { awk '{ print $14 " " $15 }' "/proc/$pn_pid/stat"; }
rq_wait() { awk '{ print $2 }' "/proc/$pn_pid/schedstat"; }
hz=$(getconf CLK_TCK)
frames_now() { status | python3 -c 'import json, sys; print(json.load(sys.stdin)["frames"])'; }

f0=$(frames_now)
c0=$(cpu_ticks)
w0=$(rq_wait)
ip netns exec "$ns_s" tcpreplay -K "${rate[@]}" "${limit[@]}" -i "$if_s" "$bench" >"$work/replay.log" 2>&1 || {
  echo "tcpreplay failed:" >&2; cat "$work/replay.log" >&2; exit 1; }
# Let PhantomNet empty the socket queue: wait until its frame count stops moving.
prev=-1
for _ in $(seq 50); do
  now=$(frames_now)
  [ "$now" = "$prev" ] && break
  prev=$now
  sleep 0.5
done
c1=$(cpu_ticks)
w1=$(rq_wait)
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pn_pid/status")
status >"$work/status.json"
kill -TERM "$pn_pid"
wait "$pn_pid" || { echo "phantomnet exited with an error:" >&2; tail -5 "$work/pn.log" >&2; exit 1; }
pn_pid=

python3 - "$work/replay.log" "$work/status.json" "$f0" "$c0" "$c1" "$hz" "$hwm_kb" \
  "$rate_name" "$bench" "$mtu" "$w0" "$w1" "${ring_mb:-0}" <<'PY'
import json, re, sys
log, st_path, f0, c0, c1, hz, hwm, rate, bench, mtu, w0, w1, ring = sys.argv[1:]
text = open(log).read()
def num(pat, default=0.0):
    m = re.search(pat, text)
    return float(m.group(1)) if m else default
sent = int(num(r"Actual: (\d+) packets"))
secs = num(r"sent in ([\d.]+) seconds")
pps = num(r"Rated: [\d.]+ Bps, [\d.]+ Mbps, ([\d.]+) pps")
mbps = num(r"Rated: [\d.]+ Bps, ([\d.]+) Mbps")
ok = int(num(r"Successful packets:\s+(\d+)"))
failed = int(num(r"Failed packets:\s+(\d+)"))
st = json.load(open(st_path))
frames = st["frames"] - int(f0)
drops = st["kernel_drops"]
(u0, s0), (u1, s1) = c0.split(), c1.split()
user = (int(u1) - int(u0)) / int(hz)
system = (int(s1) - int(s0)) / int(hz)
cpu = user + system
wait = (int(w1) - int(w0)) / 1e9
load = open("/proc/loadavg").read().split()[:3]
how = f"TPACKET_V3 ring of {ring} MiB" if ring != "0" else "pnet (poll + recvfrom per frame)"
print(f"capture {bench}, rate {rate}, veth MTU {mtu}, {how}; load {' '.join(load)}")
print(f"tcpreplay:  {sent} frames sent in {secs:.2f} s ({pps:,.0f} pps, {mbps:,.1f} Mbps); "
      f"successful {ok}, failed {failed}")
lost = 100.0 * drops / (frames + drops) if frames + drops else 0.0
print(f"phantomnet: {frames} frames processed, {drops} kernel drops ({lost:.2f}% of what reached the socket)")
fps = frames / secs if secs else 0.0
print(f"phantomnet: {fps:,.0f} frames/s over tcpreplay's {secs:.2f} s; peak RSS {int(hwm) / 1024:.1f} MB")
share = 100 * cpu / secs if secs else 0.0
print(f"phantomnet: CPU {cpu:.2f} s ({share:.0f}% of one core: user {user:.2f} s, system {system:.2f} s); "
      f"waited {wait:.2f} s for a core (run queue)")
PY
