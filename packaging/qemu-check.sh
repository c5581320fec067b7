#!/usr/bin/env bash
# Proof the ARM release binaries run: under qemu-user each one runs `check` and replays the
# demo capture, and its SQLite counts (verdicts by level, alerts by sid, flows) must equal
# those of the reference binary (the x86_64 one). With --rss, also the peak RSS of `run` with
# the default config on a veth pair in a network namespace (pings and TCP connection attempts
# across it, the status page fetched every second), and how the resident pages split between
# the emulator and PhantomNet (packaging/qemu-mem.py; aarch64 only: 64-bit guest on 64-bit host).
#   packaging/qemu-check.sh [--rss SECONDS] REFERENCE_BINARY ARM_BINARY...
# An ARM binary's name picks the emulator: *-aarch64 → qemu-aarch64-static; *-armv7 →
# qemu-arm-static -cpu cortex-a7; *-armv6 → qemu-arm-static -cpu arm1176.
set -euo pipefail
cd "$(dirname "$0")/.."
rss_secs=0
if [ "${1:-}" = --rss ]; then rss_secs=$2; shift 2; fi
ref=$1; shift
work=$(mktemp -d)
cleanup() {
  ip netns del pn-qemu-rss 2>/dev/null || true
  ip link del pnq0 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cfg=config/phantomnet.toml
pcap=tests/data/demo.pcap

counts() { # DB
  sqlite3 "$1" "SELECT 'verdict', verdict, count(*) FROM verdicts GROUP BY verdict;
                SELECT 'alert', sid, count(*) FROM alerts GROUP BY sid;
                SELECT 'flows', count(*) FROM flows;"
}

emulator() {
  case "$1" in
    *-aarch64) echo "qemu-aarch64-static" ;;
    *-armv7) echo "qemu-arm-static -cpu cortex-a7" ;;
    *-armv6) echo "qemu-arm-static -cpu arm1176" ;;
    *) echo "qemu-check.sh: cannot tell the architecture of $1 (expected -aarch64, -armv7 or -armv6)" >&2; return 1 ;;
  esac
}

"$ref" --log warn replay "$pcap" -c "$cfg" --db "$work/ref.db" >/dev/null
counts "$work/ref.db" > "$work/ref.txt"
[ -s "$work/ref.txt" ] || { echo "qemu-check.sh: the reference replay stored nothing" >&2; exit 1; }
echo "reference ($ref): $(tr '\n' ' ' < "$work/ref.txt")"

fail=0
for bin in "$@"; do
  emu=$(emulator "$bin")
  name=$(basename "$bin")
  # shellcheck disable=SC2086
  $emu "$bin" --log warn check -c "$cfg" >/dev/null
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  /usr/bin/time -f %M -o "$work/$name.rss" $emu "$bin" --log warn replay "$pcap" -c "$cfg" --db "$work/$name.db" >/dev/null
  secs=$(echo "$(date +%s.%N) - $start" | bc)
  counts "$work/$name.db" > "$work/$name.txt"
  if cmp -s "$work/ref.txt" "$work/$name.txt"; then
    printf '%-28s %-34s check ok, replay %.1f s, peak RSS %s KiB, counts equal\n' "$name" "$emu" "$secs" "$(cat "$work/$name.rss")"
  else
    echo "$name ($emu): counts differ from the reference:"
    diff "$work/ref.txt" "$work/$name.txt" || true
    fail=1
  fi
done

if [ "$rss_secs" -gt 0 ]; then
  bin=$1
  emu=$(emulator "$bin")
  port=${PHANTOMNET_RSS_PORT:-18617}
  ip netns add pn-qemu-rss
  ip link add pnq0 type veth peer name pnq1
  ip link set pnq1 netns pn-qemu-rss
  ip addr add 10.213.0.1/24 dev pnq0 && ip link set pnq0 up
  ip -n pn-qemu-rss addr add 10.213.0.2/24 dev pnq1
  ip -n pn-qemu-rss link set pnq1 up && ip -n pn-qemu-rss link set lo up
  # The emulator alone, to tell its share from PhantomNet's.
  # shellcheck disable=SC2086
  /usr/bin/time -f %M -o "$work/base.rss" $emu "$bin" --help >/dev/null
  # -strace logs the guest's own mmaps: packaging/qemu-mem.py uses them to split the resident
  # pages into the emulator's and PhantomNet's (the peak RSS is the same with or without it).
  # shellcheck disable=SC2086
  /usr/bin/time -f %M -o "$work/run.rss" $emu -strace -D "$work/strace.log" "$bin" --log warn \
    run -c "$cfg" -i pnq0 --db "$work/run.db" --serve "127.0.0.1:$port" &
  tpid=$!
  sleep 2
  qpid=$(pgrep -P "$tpid" | head -n1)
  # Traffic across the veth: pings, and TCP connections to a port nobody listens on (SYN, RST).
  ip netns exec pn-qemu-rss ping -q -i 0.01 -w "$rss_secs" 10.213.0.1 >/dev/null &
  ping_pid=$!
  end=$(( $(date +%s) + rss_secs ))
  fetches=0
  while [ "$(date +%s)" -lt "$end" ]; do
    ip netns exec pn-qemu-rss bash -c 'for p in 1 2 3 4 5; do : 2>/dev/null </dev/tcp/10.213.0.1/$((9000 + p)); done' 2>/dev/null || true
    for page in / /api/status /metrics; do
      curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$port$page" && fetches=$((fetches + 1))
    done
    sleep 1
  done
  wait "$ping_pid" || true
  split=""
  if [ -n "$qpid" ] && [ "${emu%% *}" = qemu-aarch64-static ] && [ -r "/proc/$qpid/pagemap" ]; then
    split=$(packaging/qemu-mem.py "$qpid" "$work/strace.log" "$(basename "$bin")" 2>&1 || true)
  fi
  kill -TERM "$qpid" 2>/dev/null || true
  wait "$tpid" || true
  echo "run on a veth for ${rss_secs} s under $emu with $cfg ($fetches status page fetches):" \
       "peak RSS $(cat "$work/run.rss") KiB (the emulator running --help: $(cat "$work/base.rss") KiB)"
  [ -n "$split" ] && printf 'resident pages at the end, by owner (packaging/qemu-mem.py):\n%s\n' "$split"
  echo "stored: $(counts "$work/run.db" | tr '\n' ' ')"
fi
exit $fail
