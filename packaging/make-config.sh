#!/bin/sh
# Writes the shipped config for one install flavour from config/phantomnet.toml, so packages
# carry every documented key and its comment; only paths, interface, retention, tables and the
# service user differ. Fails if a key it sets is missing (the default config changed shape).
#   packaging/make-config.sh debian|openwrt OUT
set -eu
flavour=$1
out=$2
src="$(dirname "$0")/../config/phantomnet.toml"
share=/usr/share/phantomnet
case "$flavour" in
  debian)
    # An SD card has room: the default retention stands. The database is in the unit's
    # StateDirectory.
    iface=eth0 db=/var/lib/phantomnet/phantomnet.db
    max_rows=200000 max_bytes=67108864 flows=16384 hosts=2048 ;;
  openwrt)
    # /tmp is RAM: keep the database to 4 MiB / 20k rows a table, and the tables small for a
    # 128 MB router. Point db at an external mount (and raise retention) to keep history.
    iface=br-lan db=/tmp/phantomnet/phantomnet.db
    max_rows=20000 max_bytes=4194304 flows=8192 hosts=1024 ;;
  *) echo "make-config.sh: unknown flavour \`$flavour' (expected debian or openwrt)" >&2; exit 2 ;;
esac
sed -e "s|^interface = \"\"|interface = \"$iface\"|" \
    -e "s|^db = \".*\"|db = \"$db\"|" \
    -e "/^rules = /s|\"\.\./rules/|\"$share/rules/|g" \
    -e "s|^model = \"\.\./models/|model = \"$share/models/|" \
    -e "s|^max_rows = [0-9]*|max_rows = $max_rows|" \
    -e "s|^max_bytes = [0-9]*|max_bytes = $max_bytes|" \
    -e "s|^flows = [0-9][0-9]*\( *\)|flows = $flows\1|" \
    -e "s|^hosts = [0-9][0-9]*\( *\)|hosts = $hosts\1|" \
    -e "s|^user = \"\"|user = \"phantomnet\"|" \
    "$src" > "$out.tmp"
for want in "interface = \"$iface\"" "db = \"$db\"" "rules = \[\"$share/rules/" "model = \"$share/models/" \
            "max_rows = $max_rows" "max_bytes = $max_bytes" "flows = $flows" "hosts = $hosts" 'user = "phantomnet"'; do
  if ! grep -q "^$want" "$out.tmp"; then
    echo "make-config.sh: $src: could not set \`$want' (did the default config change?)" >&2
    rm -f "$out.tmp"; exit 1
  fi
done
mv "$out.tmp" "$out"
