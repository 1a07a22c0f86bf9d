#!/bin/sh
# Installed by a sysvm live patch (sysvm-agent patch). Shows or restarts the daemons of a
# virtual router: `sysvm-services.sh status` or `sysvm-services.sh restart`.
set -u
SERVICES="dnsmasq haproxy apache2 ssh"
case "${1:-status}" in
status)
	for s in $SERVICES; do printf '%s %s\n' "$s" "$(systemctl is-active "$s" 2>/dev/null)"; done ;;
restart)
	for s in $SERVICES; do systemctl restart "$s" || echo "restart $s failed" >&2; done ;;
*)
	echo "usage: $0 status|restart" >&2; exit 2 ;;
esac
