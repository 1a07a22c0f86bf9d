#!/bin/sh
# Installed by a sysvm live patch (sysvm-agent patch). Runs the router's health checks between
# two platform visits (from cron, as CloudStack's VR runs its monitor), so the results files
# the platform reads with `sysvm-agent results` are recent even when a visit is late.
set -u
AGENT=${SYSVM_AGENT:-sysvm-agent}
for type in basic advanced; do
	timeout 120 "$AGENT" run "$type" >/dev/null 2>>/var/log/sysvm-health-cron.log || \
		echo "$(date -u +%FT%TZ) $type checks did not run (exit $?)" >>/var/log/sysvm-health-cron.log
done
