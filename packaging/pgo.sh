#!/usr/bin/env bash
# Profile-guided optimisation (PGO) for release builds. Builds an instrumented PhantomNet for
# this machine, replays the project's own training traffic through it with the default config,
# rules and model (tests/data/demo.pcap, and the demo with a spoofed SYN flood that
# `examples/make_demo_pcap.rs --flood` writes), and merges what it counted into one profile.
# Release builds of every target then compile with `-C profile-use=PROFILE`: LLVM lays out and
# inlines by the measured branch and call counts (docs/DECISIONS.md, "Profile-guided release
# builds").
#
#   packaging/pgo.sh            # writes target/pgo/phantomnet-HASH.profdata, prints its path
#   packaging/pgo.sh --build    # also builds target/pgo/phantomnet for this machine with it
#
# The profile's name carries a hash of its contents: cargo does not look inside files named
# in RUSTFLAGS, so a new profile must come with new flags to be compiled in at all.
#
# Never trained on ../shared: the benchmark must not be what the profile was taught.
# Needs the rustup component llvm-tools (for llvm-profdata; added if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=0
case "${1:-}" in
  --build) build=1 ;;
  "") ;;
  -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
  *) echo "pgo.sh: unknown argument \`$1' (see --help)" >&2; exit 2 ;;
esac

target_dir=${CARGO_TARGET_DIR:-$root/target}
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)
work=$target_dir/pgo

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$profdata" ]; then
  echo "pgo.sh: adding the rustup component llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools >/dev/null 2>&1 || rustup component add llvm-tools-preview >/dev/null
fi
[ -x "$profdata" ] || { echo "pgo.sh: no llvm-profdata at $profdata" >&2; exit 1; }

rm -rf "$work/raw"
mkdir -p "$work/raw"
echo "pgo.sh: instrumented build" >&2
# The instrumented build has a target directory of its own: its artefacts must never be
# mistaken for (or overwrite) a normal build's.
CARGO_TARGET_DIR=$work/gen RUSTFLAGS="${RUSTFLAGS:-} -C profile-generate=$work/raw" \
  cargo build --locked --release --bin phantomnet >&2
# (the dev profile: `cargo test` has built it already, and it only writes frames)
cargo run --locked --quiet --example make_demo_pcap -- --flood "$work/train.pcap" >&2
for input in "$root/tests/data/demo.pcap" "$work/train.pcap"; do
  rm -f "$work/train.db" "$work/train.db-wal" "$work/train.db-shm"
  "$work/gen/release/phantomnet" --log warn replay "$input" -c "$root/config/phantomnet.toml" \
    --db "$work/train.db" >/dev/null
done
rm -f "$work/train.db" "$work/train.db-wal" "$work/train.db-shm"
"$profdata" merge -o "$work/merged.profdata" "$work/raw"
rm -f "$work"/phantomnet-*.profdata
profile=$work/phantomnet-$(sha256sum "$work/merged.profdata" | cut -c1-16).profdata
mv "$work/merged.profdata" "$profile"
echo "pgo.sh: profile $profile ($(stat -c %s "$profile") bytes)" >&2

if [ "$build" = 1 ]; then
  echo "pgo.sh: optimised build" >&2
  CARGO_TARGET_DIR=$work/use RUSTFLAGS="${RUSTFLAGS:-} -C profile-use=$profile" \
    cargo build --locked --release --bin phantomnet >&2
  cp "$work/use/release/phantomnet" "$work/phantomnet"
  echo "pgo.sh: built $work/phantomnet" >&2
fi
echo "$profile"
