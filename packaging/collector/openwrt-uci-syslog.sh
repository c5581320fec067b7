#!/bin/sh
# Points a router's PhantomNet at a central collector from OpenWrt's uci: reads the
# `phantomnet.syslog` section and writes it into the [syslog] section of the TOML config
# (other sections and all comments are kept). Run it after `uci commit phantomnet`, or from
# the procd init script before starting the service.
#
#   uci set phantomnet.syslog=syslog
#   uci set phantomnet.syslog.enabled='1'
#   uci set phantomnet.syslog.transport='tcp'          # udp | tcp | unix
#   uci set phantomnet.syslog.server='192.0.2.10:514'  # the collector (host:port)
#   uci set phantomnet.syslog.min_level='WARNING'      # WARNING | HIGH | CRITICAL
#   uci set phantomnet.syslog.alert_priority='3'       # alerts with priority 1..3
#   uci set phantomnet.syslog.appliance='shop-17'      # this router's name ("" = hostname)
#   uci commit phantomnet
#   /usr/share/phantomnet/openwrt-uci-syslog.sh && /etc/init.d/phantomnet restart
#
# Send directly (udp/tcp) rather than through logd (transport unix + `uci set
# system.@system[0].log_ip=...`): logd's relay adds its own header and older logread builds
# cut forwarded lines at 512 bytes, which breaks long verdict JSON.
#
#   openwrt-uci-syslog.sh [CONFIG]   (default /etc/phantomnet/phantomnet.toml)
set -eu
conf=${1:-/etc/phantomnet/phantomnet.toml}
[ -f "$conf" ] || { echo "openwrt-uci-syslog.sh: $conf: no such config file" >&2; exit 1; }

get() { uci -q get "phantomnet.syslog.$1" 2>/dev/null || true; }

enabled=$(get enabled)
case "$enabled" in
  1|true|yes|on) enabled=true ;;
  0|false|no|off|"") enabled=false ;;
  *) echo "openwrt-uci-syslog.sh: phantomnet.syslog.enabled: \`$enabled' is not 0 or 1" >&2; exit 1 ;;
esac

# key=value pairs for the [syslog] section; strings quoted, numbers and booleans bare.
set -- "enabled=$enabled"
for k in transport server facility min_level hostname app_name; do
  v=$(get "$k")
  [ -n "$v" ] || continue
  case "$v" in *\"*|*\\*) echo "openwrt-uci-syslog.sh: phantomnet.syslog.$k: quotes and backslashes are not allowed" >&2; exit 1 ;; esac
  set -- "$@" "$k=\"$v\""
done
for k in alert_priority queue; do
  v=$(get "$k")
  [ -n "$v" ] || continue
  case "$v" in *[!0-9]*) echo "openwrt-uci-syslog.sh: phantomnet.syslog.$k: \`$v' is not a number" >&2; exit 1 ;; esac
  set -- "$@" "$k=$v"
done
appliance=$(get appliance)
case "$appliance" in *\"*|*\\*) echo "openwrt-uci-syslog.sh: phantomnet.syslog.appliance: quotes and backslashes are not allowed" >&2; exit 1 ;; esac

grep -q '^\[syslog\]' "$conf" || printf '\n[syslog]\n' >> "$conf"
awk -v pairs="$*" -v appliance="$appliance" '
  BEGIN {
    n = split(pairs, p, " ")
    for (i = 1; i <= n; i++) { eq = index(p[i], "="); val[substr(p[i], 1, eq - 1)] = substr(p[i], eq + 1) }
  }
  function flush_missing(   k) { for (k in val) if (!(k in done)) print k " = " val[k] }
  /^\[/ {
    if (section == "syslog") flush_missing()
    section = substr($0, 2, index($0, "]") - 2)
  }
  section == "syslog" && match($0, /^[a-z_]+ *=/) {
    k = $0; sub(/ *=.*/, "", k)
    if (k in val) { print k " = " val[k]; done[k] = 1; next }
  }
  section == "output" && appliance != "" && /^appliance *=/ { print "appliance = \"" appliance "\""; next }
  { print }
  END { if (section == "syslog") flush_missing() }
' "$conf" > "$conf.tmp"
mv "$conf.tmp" "$conf"
