#!/usr/bin/env bash
# Short fuzzing run of every PhantomNet fuzz target (default 30 s each), for developers.
#
#   scripts/fuzz-short.sh              # every target, 30 s each
#   scripts/fuzz-short.sh 600 pcap     # one target, 10 minutes
#   FUZZ_JOBS=2 scripts/fuzz-short.sh  # two targets at a time
#
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`). Seed corpora are copied into
# fuzz/corpus/<target> at run time (that directory is git-ignored): frames and captures
# from $PHANTOMNET_PCAPS (default ../shared/pcaps) and tests/data, rules from
# ../shared/conformance and rules/, the default config, a small model, intel lists.
# A crash leaves its input in fuzz/artifacts/<target>/; turn it into a regression test
# (tests/fuzz_regressions.rs) before fixing it. Per-target summaries (executions, coverage)
# go to fuzz/logs/<target>.log and are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
secs=${1:-30}
shift || true
all=(decode pcap rules intel model config query)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
jobs=${FUZZ_JOBS:-1}
shared=$(cd "$root/../shared" 2>/dev/null && pwd || true)
pcaps=${PHANTOMNET_PCAPS:-${shared:+$shared/pcaps}}
conf=${shared:+$shared/conformance}

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 1; }

corpus="$root/fuzz/corpus"
mkdir -p "$corpus" "$root/fuzz/logs"
for t in "${all[@]}"; do mkdir -p "$corpus/$t"; done

# --- seeds -------------------------------------------------------------------------------
# Captures as they are (pcap target) and split into single frames prefixed by the
# decoder's link-type selector byte (decode target).
seed_pcaps=()
[ -n "$pcaps" ] && [ -d "$pcaps" ] && for f in "$pcaps"/*.pcap "$pcaps"/*.pcapng; do [ -f "$f" ] && seed_pcaps+=("$f"); done
seed_pcaps+=("$root/tests/data/demo.pcap")
for f in "${seed_pcaps[@]}"; do
  size=$(stat -c %s "$f")
  # Small captures whole; big ones cut to their first 64 KiB (the reader must cope).
  if [ "$size" -le 65536 ]; then cp "$f" "$corpus/pcap/$(basename "$f")"; else head -c 65536 "$f" >"$corpus/pcap/$(basename "$f").head"; fi
done
python3 - "$corpus/decode" "${seed_pcaps[@]}" <<'PY'
import os, struct, sys, hashlib
out = sys.argv[1]
# Selector byte: index into decode.rs's LinkType list used by fuzz_targets/decode.rs.
SEL = {1: 0, 113: 1, 276: 2, 101: 3, 12: 3, 14: 3, 228: 4, 229: 5, 0: 6, 108: 6}
def frames(b):
    magic = b[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\xa1\xb2\xc3\xd4', b'\x4d\x3c\xb2\xa1', b'\xa1\xb2\x3c\x4d'):
        e = '<' if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1') else '>'
        lt = struct.unpack(e + 'I', b[20:24])[0] & 0x3ffffff
        o = 24
        while o + 16 <= len(b):
            incl = struct.unpack(e + 'I', b[o + 8:o + 12])[0]
            yield lt, b[o + 16:o + 16 + incl]
            o += 16 + incl
    elif magic == b'\x0a\x0d\x0d\x0a':
        e = '<' if b[8:12] == b'\x4d\x3c\x2b\x1a' else '>'
        o, lts = 0, []
        while o + 12 <= len(b):
            bt, bl = struct.unpack(e + 'II', b[o:o + 8])
            if bl < 12: break
            if bt == 1: lts.append(struct.unpack(e + 'H', b[o + 8:o + 10])[0])
            elif bt == 6:
                iface, _, _, cap = struct.unpack(e + 'IIII', b[o + 8:o + 24])
                yield (lts[iface] if iface < len(lts) else 1), b[o + 28:o + 28 + cap]
            o += bl
seen = set()
for path in sys.argv[2:]:
    data = open(path, 'rb').read()
    n = 0
    for lt, fr in frames(data):
        if lt not in SEL: continue
        # A few frames of each distinct (size class, first bytes) per file keep it small.
        key = (lt, len(fr) // 64, fr[12:14], fr[23:24] if len(fr) > 23 else b'')
        if key in seen: continue
        seen.add(key)
        blob = bytes([SEL[lt]]) + fr
        open(os.path.join(out, hashlib.sha1(blob).hexdigest()), 'wb').write(blob)
        n += 1
        if n >= 40: break
PY
# Rules: ours and every conformance test's.
cp "$root/rules/phantomnet.rules" "$corpus/rules/phantomnet.rules"
if [ -n "$conf" ] && [ -d "$conf" ]; then
  find "$conf" -name '*.rules' | while read -r r; do cp "$r" "$corpus/rules/$(echo "$r" | md5sum | cut -c1-12).rules"; done
fi
# Rule lines one by one, too (short inputs mutate faster).
grep -h '^[a-z]' "$corpus/rules/"*.rules | head -300 | while IFS= read -r line; do
  printf '%s\n' "$line" >"$corpus/rules/line-$(printf '%s' "$line" | md5sum | cut -c1-12)"
done
# Config: the documented default, and each section alone.
cp "$root/config/phantomnet.toml" "$corpus/config/default.toml"
awk '/^\[/{n++} {print > ("'"$corpus/config"'/section-" n ".toml")}' "$root/config/phantomnet.toml"
# Intel lists in each supported dialect.
printf '# plain\n192.0.2.1\n198.51.100.0/24\n2001:db8::/32\n' >"$corpus/intel/plain.txt"
printf '; Spamhaus DROP List\n1.10.16.0/20 ; SBL256894\n2.56.192.0/22 ; SBL459831\n' >"$corpus/intel/drop.txt"
printf '192.0.2.7,1,37\n198.51.100.9,2,90\n' >"$corpus/intel/iprep.csv"
printf '#\n# firehol_level1\n#\n0.0.0.0/8\n10.0.0.0/8\n224.0.0.0/3\n' >"$corpus/intel/firehol.netset"
# Model: a small one trained here (the shipped one is 270 KB, too big to mutate well),
# plus the shipped one.
if [ ! -f "$corpus/model/small.json" ]; then
  # Any phantomnet build will do; a debug build is quick to make.
  pn=target/release/phantomnet
  [ -x "$pn" ] || pn=target/debug/phantomnet
  [ -x "$pn" ] || { cargo build -q && pn=target/debug/phantomnet; }
  "$pn" --log error train tests/data/demo.pcap --out "$corpus/model/small.json" \
    --trees 3 --samples 16 --seed 1 -c config/phantomnet.toml >/dev/null
fi
cp "$root/models/default.json" "$corpus/model/default.json"
# Query strings.
for q in "" "min=HIGH" "since=1767225600.5&limit=10" "sid=2000001&limit=1" "min=warning&since=0&limit=1000000" "limit=0" "since=nan"; do
  printf '%s' "$q" >"$corpus/query/$(printf '%s' "$q" | md5sum | cut -c1-12)"
done

# --- run ---------------------------------------------------------------------------------
maxlen() {
  case $1 in
    pcap) echo 70000 ;;
    model) echo 300000 ;;
    rules|config) echo 16384 ;;
    *) echo 4096 ;;
  esac
}
cd "$root/fuzz"
cargo +nightly fuzz build -O >/dev/null 2>&1 || cargo +nightly fuzz build -O
run_one() {
  local t=$1
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -max_len="$(maxlen "$t")" \
    -timeout=10 -rss_limit_mb=1024 -print_final_stats=1 >"logs/$t.log" 2>&1
  local rc=$?
  local execs cov
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || true)
  cov=$(grep -E '^#[0-9]+.*(DONE|cov:)' "logs/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
  if [ $rc -eq 0 ]; then
    echo "$t: ok, ${execs:-?} executions in ${secs}s, ${cov:-cov: ?}"
  else
    echo "$t: FAILED (exit $rc), see fuzz/logs/$t.log and fuzz/artifacts/$t/"
  fi
  return $rc
}
fail=0
running=0
pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  running=$((running + 1))
  if [ $running -ge "$jobs" ]; then
    wait "${pids[0]}" || fail=1
    pids=("${pids[@]:1}")
    running=$((running - 1))
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
exit $fail
