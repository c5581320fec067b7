#!/usr/bin/env bash
# Release builds: stripped, fully static PhantomNet binaries for x86_64 and the ARM boards it is
# meant for, plus the .deb (Raspberry Pi OS / Debian) and .ipk (OpenWrt) packages, into dist/.
#
#   packaging/build-release.sh                    # all four targets, packages
#   packaging/build-release.sh --targets "aarch64-unknown-linux-musl"
#   packaging/build-release.sh --opt-level s      # override [profile.release] opt-level
#   packaging/build-release.sh --no-pgo           # without profile-guided optimisation
#   packaging/build-release.sh --no-packages      # binaries only
#   packaging/build-release.sh --install-tools    # pip install ziglang cargo-zigbuild first
#   packaging/build-release.sh --dist DIR         # write to DIR instead of dist/
#
# Linking and the bundled SQLite C code go through zig (`cargo zigbuild`), which carries musl
# and a C cross compiler for every target, so no system cross toolchain is needed. Where rustup
# has a prebuilt std for a target the stable toolchain builds it; where it has none (armv7/armv6
# musl on some mirrors) nightly builds std from source (-Zbuild-std). Each binary is checked:
# `file` must say "statically linked", ARM binaries must fit the 3 MB budget.
# Every target is compiled with the profile packaging/pgo.sh records on this machine from the
# project's own training traffic (profile-guided optimisation; --no-pgo leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

all_targets="x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf arm-unknown-linux-musleabihf"
targets=$all_targets
opt_level=""
dist="$root/dist"
packages=1
install_tools=0
pgo=1
size_budget=$((3 * 1024 * 1024))
while [ $# -gt 0 ]; do
  case "$1" in
    --targets) targets=$2; shift 2 ;;
    --opt-level) opt_level=$2; shift 2 ;;
    --no-packages) packages=0; shift ;;
    --no-pgo) pgo=0; shift ;;
    --install-tools) install_tools=1; shift ;;
    --dist) dist=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "build-release.sh: unknown argument \`$1' (see --help)" >&2; exit 2 ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
mkdir -p "$dist"
dist=$(cd "$dist" && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}

have_zigbuild() { cargo zigbuild --help >/dev/null 2>&1 && { command -v zig >/dev/null || python3 -c 'import ziglang' 2>/dev/null; }; }
if ! have_zigbuild; then
  if [ "$install_tools" = 1 ]; then
    pip install --quiet ziglang cargo-zigbuild || pip install --quiet --break-system-packages ziglang cargo-zigbuild
  fi
  if ! have_zigbuild; then
    echo "build-release.sh: needs cargo-zigbuild and zig: run with --install-tools, or" >&2
    echo "  pip install ziglang cargo-zigbuild   (or: cargo install cargo-zigbuild + zig on PATH)" >&2
    exit 1
  fi
fi

# Stable with a prebuilt std when rustup has one; otherwise nightly with std built from source.
toolchain_args() {
  local t=$1
  if rustup target list --installed 2>/dev/null | grep -qx "$t" || rustup target add "$t" >/dev/null 2>&1; then
    echo ""
  else
    if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
      rustup toolchain install nightly --profile minimal >/dev/null
      rustup component add rust-src --toolchain nightly >/dev/null
    fi
    echo "+nightly -Zbuild-std=std,panic_abort"
  fi
}

short_name() {
  case "$1" in
    x86_64-unknown-linux-musl) echo x86_64 ;;
    aarch64-unknown-linux-musl) echo aarch64 ;;
    armv7-unknown-linux-musleabihf) echo armv7 ;;
    arm-unknown-linux-musleabihf) echo armv6 ;;
    *) echo "$1" ;;
  esac
}

# One profile for every target: branch and call counts are properties of the source, not of
# the instruction set (the aarch64 binary grows ~100 KB with it and stays within budget).
pgo_flags=""
if [ "$pgo" = 1 ]; then
  profile=$("$root/packaging/pgo.sh")
  pgo_flags=" -C profile-use=$profile"
fi

summary=()
for t in $targets; do
  case " $all_targets " in *" $t "*) ;; *) echo "build-release.sh: unsupported target $t (expected one of: $all_targets)" >&2; exit 2 ;; esac
  args=$(toolchain_args "$t")
  plus=""; zflags=""
  if [ -n "$args" ]; then plus=${args%% *}; zflags=${args#* }; fi
  echo "== $t ${plus:+(nightly, std from source)}"
  start=$(date +%s)
  # Non-PIE static executables: what `file` calls "statically linked", a little smaller and
  # faster than static-pie; nothing on these boxes loads it at a random base anyway.
  rustflags="${RUSTFLAGS:-} -C relocation-model=static -C target-feature=+crt-static$pgo_flags"
  # With std built from source there is no rust-std component for the target, and that
  # component is where rustc's self-contained musl startup objects (crt1.o, crti.o, ...) and
  # libc.a live: left self-contained, the link fails with "failed to open object crt1.o".
  # link-self-contained=no makes rustc leave crt objects and libc to the linker, zig's cc,
  # which carries its own musl for every target. No unwinder is needed: panic = "abort" and
  # std built with panic_abort. (The linker then warns that rustlib/TARGET/lib does not
  # exist: rustc still passes that directory with -L; harmless.)
  [ -n "$plus" ] && rustflags+=" -C link-self-contained=no"
  envs=("RUSTFLAGS=$rustflags")
  [ -n "$opt_level" ] && envs+=("CARGO_PROFILE_RELEASE_OPT_LEVEL=$opt_level")
  # shellcheck disable=SC2086
  env "${envs[@]}" cargo $plus zigbuild --locked --release --target "$t" $zflags --bin phantomnet
  secs=$(( $(date +%s) - start ))
  out="$dist/phantomnet-$version-$(short_name "$t")"
  cp "$target_dir/$t/release/phantomnet" "$out"
  desc=$(file -b "$out")
  size=$(stat -c %s "$out")
  case "$desc" in
    *"statically linked"*) ;;
    *) echo "build-release.sh: $out is not statically linked: $desc" >&2; exit 1 ;;
  esac
  case "$desc" in
    *", stripped"*) ;;
    *) echo "build-release.sh: $out is not stripped: $desc" >&2; exit 1 ;;
  esac
  if [ "$t" != x86_64-unknown-linux-musl ] && [ "$size" -gt "$size_budget" ]; then
    echo "build-release.sh: $out is $size bytes, over the 3 MB budget ($size_budget)" >&2
    exit 1
  fi
  summary+=("$(printf '%-34s %9d bytes  %4ds  %s%s' "$t" "$size" "$secs" "${opt_level:-profile}" "$([ "$pgo" = 1 ] && echo ", pgo")")")
done

if [ "$packages" = 1 ]; then
  "$root/packaging/make-packages.sh" "$dist" "$version"
fi

echo "== release binaries (target, size, build time, opt-level)"
printf '%s\n' "${summary[@]}"
(cd "$dist" && ls -l)
