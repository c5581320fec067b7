#!/usr/bin/env bash
# Packages built from the release binaries in DIST (called by build-release.sh):
#   .deb for arm64 and armhf (Raspberry Pi OS / Debian, systemd), with dpkg-deb only;
#   .ipk for aarch64 and arm (OpenWrt, procd), as opkg reads them: a gzipped tar holding
#   debian-binary, control.tar.gz and data.tar.gz. No OpenWrt SDK needed.
#   packaging/make-packages.sh DIST VERSION
set -euo pipefail
dist=$1
version=$2
root=$(cd "$(dirname "$0")/.." && pwd)
pk="$root/packaging"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Reproducible archives: fixed times and owners.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}
tar_repro=(--sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH")

share_files() { # ROOT: rules and model under /usr/share/phantomnet
  install -D -m 0644 "$root/rules/phantomnet.rules" "$1/usr/share/phantomnet/rules/phantomnet.rules"
  install -D -m 0644 "$root/rules/phantomnet-threats.rules" "$1/usr/share/phantomnet/rules/phantomnet-threats.rules"
  install -D -m 0644 "$root/models/default.json" "$1/usr/share/phantomnet/models/default.json"
}

# Debian: arm64 takes the aarch64 binary. armhf takes the ARMv6 one, because Raspberry Pi OS's
# armhf is ARMv6 (Pi Zero / Pi 1) and an ARMv6 binary runs on every ARMv7 board as well.
make_deb() { # DEB_ARCH BINARY
  local arch=$1 bin=$2 r="$work/deb-$1"
  [ -f "$bin" ] || { echo "make-packages.sh: no $bin, skipping the $arch .deb"; return 0; }
  install -D -m 0755 "$bin" "$r/usr/bin/phantomnet"
  install -d "$r/etc/phantomnet"
  "$pk/make-config.sh" debian "$r/etc/phantomnet/phantomnet.toml"
  chmod 0644 "$r/etc/phantomnet/phantomnet.toml"
  install -D -m 0644 "$pk/systemd/phantomnet.service" "$r/lib/systemd/system/phantomnet.service"
  install -D -m 0644 "$pk/systemd/phantomnet.sysusers" "$r/usr/lib/sysusers.d/phantomnet.conf"
  share_files "$r"
  install -D -m 0644 "$root/README.md" "$r/usr/share/doc/phantomnet/README.md"
  install -d "$r/DEBIAN"
  local size
  size=$(du -sk --exclude=DEBIAN "$r" | cut -f1)
  cat > "$r/DEBIAN/control" <<EOF
Package: phantomnet
Version: $version-1
Architecture: $arch
Maintainer: PhantomNet developers <phantomnet@localhost>
Installed-Size: $size
Section: net
Priority: optional
Homepage: https://github.com/phantomnet/phantomnet
Description: network intrusion and anomaly detector for small boxes
 Watches the LAN's frames, learns what normal looks like for each host and
 reports suspicious hosts with reasons on a status page, in SQLite and as
 Suricata-style EVE JSON. One static binary; runs as its own user with only
 CAP_NET_RAW and CAP_NET_ADMIN.
EOF
  echo /etc/phantomnet/phantomnet.toml > "$r/DEBIAN/conffiles"
  cat > "$r/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers phantomnet.conf
  elif ! getent passwd phantomnet >/dev/null; then
    adduser --system --group --home /var/lib/phantomnet --no-create-home phantomnet
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # Not started here: choose the interface in /etc/phantomnet/phantomnet.toml first, then
    # `systemctl enable --now phantomnet`. An upgrade restarts a running service.
    if systemctl is-active --quiet phantomnet; then systemctl restart phantomnet || true; fi
  fi
fi
EOF
  cat > "$r/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now phantomnet >/dev/null 2>&1 || true
fi
EOF
  cat > "$r/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
[ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || true
# purge removes the database too; remove keeps it.
if [ "$1" = purge ]; then rm -rf /var/lib/phantomnet; fi
EOF
  chmod 0755 "$r/DEBIAN/postinst" "$r/DEBIAN/prerm" "$r/DEBIAN/postrm"
  find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zxz --build "$r" "$dist/phantomnet_${version}-1_${arch}.deb" >/dev/null
  echo "built $dist/phantomnet_${version}-1_${arch}.deb"
}

# OpenWrt: the opkg architecture names are the common ones (Pi 3/4 and most aarch64 routers;
# Cortex-A7 routers and the Pi 2); override for other boards (`opkg print-architecture`).
make_ipk() { # SHORT OPKG_ARCH BINARY
  local short=$1 arch=$2 bin=$3 r="$work/ipk-$1"
  [ -f "$bin" ] || { echo "make-packages.sh: no $bin, skipping the $short .ipk"; return 0; }
  install -D -m 0755 "$bin" "$r/data/usr/bin/phantomnet"
  install -D -m 0755 "$pk/openwrt/phantomnet/files/phantomnet.init" "$r/data/etc/init.d/phantomnet"
  install -D -m 0600 "$pk/openwrt/phantomnet/files/phantomnet.config" "$r/data/etc/config/phantomnet"
  install -d "$r/data/etc/phantomnet"
  "$pk/make-config.sh" openwrt "$r/data/etc/phantomnet/phantomnet.toml"
  chmod 0644 "$r/data/etc/phantomnet/phantomnet.toml"
  share_files "$r/data"
  local size
  size=$(du -sb "$r/data" | cut -f1)
  install -d "$r/control"
  cat > "$r/control/control" <<EOF
Package: phantomnet
Version: $version-1
Source: packaging/openwrt/phantomnet
SourceName: phantomnet
License: MIT
Section: net
Require-User: phantomnet=372:phantomnet=372
Architecture: $arch
Installed-Size: $size
Maintainer: PhantomNet developers
Description: Network intrusion and anomaly detector: watches the LAN, reports suspicious
 hosts with reasons on a status page bound to the LAN address, in SQLite and EVE JSON.
EOF
  printf '/etc/config/phantomnet\n/etc/phantomnet/phantomnet.toml\n' > "$r/control/conffiles"
  # OpenWrt's standard scripts: default_postinst creates the Require-User user and group,
  # enables and starts the init script; default_prerm stops and disables it.
  cat > "$r/control/postinst" <<'EOF'
#!/bin/sh
[ "${IPKG_NO_SCRIPT}" = "1" ] && exit 0
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_postinst $0 $@
EOF
  cat > "$r/control/prerm" <<'EOF'
#!/bin/sh
[ -s ${IPKG_INSTROOT}/lib/functions.sh ] || exit 0
. ${IPKG_INSTROOT}/lib/functions.sh
default_prerm $0 $@
EOF
  chmod 0755 "$r/control/postinst" "$r/control/prerm"
  mkdir -p "$r/pkg"
  echo "2.0" > "$r/pkg/debian-binary"
  tar "${tar_repro[@]}" -C "$r/control" -czf "$r/pkg/control.tar.gz" .
  tar "${tar_repro[@]}" -C "$r/data" -czf "$r/pkg/data.tar.gz" .
  touch -d "@$SOURCE_DATE_EPOCH" "$r/pkg/"*
  local out="$dist/phantomnet_${version}-1_${arch}.ipk"
  tar --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -C "$r/pkg" \
    -czf "$out" ./debian-binary ./control.tar.gz ./data.tar.gz
  echo "built $out"
}

make_deb arm64 "$dist/phantomnet-$version-aarch64"
make_deb armhf "$dist/phantomnet-$version-armv6"
make_ipk aarch64 "${OPENWRT_ARCH_AARCH64:-aarch64_cortex-a53}" "$dist/phantomnet-$version-aarch64"
make_ipk arm "${OPENWRT_ARCH_ARM:-arm_cortex-a7_neon-vfpv4}" "$dist/phantomnet-$version-armv7"
