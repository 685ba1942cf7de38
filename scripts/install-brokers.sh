#!/usr/bin/env bash
# Install the brokers the integration tests use, from Debian's packages:
# mosquitto and its clients, and rabbitmq-server (for the three-node cluster of
# scripts/rabbitmq-cluster.sh). Idempotent: it installs only what is missing, and
# runs with no stdin as root (CI) or through sudo.
#
# The rabbitmq-server package may start its own node (rabbit@<host> on port 5672,
# with epmd on 4369) where a service manager lets it. The tests never use that
# node, so this script stops it again, with the package's own tools.
set -euo pipefail

say() { printf 'install-brokers: %s\n' "$*" >&2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]} with apt-get"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The package's service, started at install time or at boot. Under systemd:
# stop it and keep it from starting at boot. Elsewhere (containers, where
# invoke-rc.d may or may not have started it): stop the node its init script
# recorded, by that PID file.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if systemctl is-enabled --quiet rabbitmq-server 2>/dev/null ||
        systemctl is-active --quiet rabbitmq-server 2>/dev/null; then
        say "stopping and disabling the rabbitmq-server service (the tests run their own nodes)"
        $sudo systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
    fi
else
    pid_file=/var/run/rabbitmq/pid
    pid=$(cat "$pid_file" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        say "stopping the rabbitmq-server service node (pid $pid; the tests run their own nodes)"
        # "service" runs the package's init script itself (invoke-rc.d obeys a
        # policy-rc.d that may deny the stop and still exit 0); SIGTERM by the
        # recorded PID is the last resort, and also shuts the node down cleanly.
        $sudo service rabbitmq-server stop >/dev/null 2>&1 || true
        for i in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$i" -ne 150 ] || $sudo kill -TERM "$pid" 2>/dev/null || true
            sleep 0.1 # a poll inside a 30 s deadline
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "the rabbitmq-server service node (pid $pid) did not stop"
            exit 1
        fi
        # That node started the machine's epmd (port 4369); with no node left
        # registered in it, stop it too, with its own command.
        if epmd -names 2>/dev/null | grep -q '^epmd: up and running' &&
            ! epmd -names 2>/dev/null | grep -q '^name '; then
            epmd -kill >/dev/null 2>&1 || true
        fi
    fi
fi
say "mosquitto $(/usr/sbin/mosquitto -h 2>/dev/null | head -n 1 | awk '{print $3}')," \
    "rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?') ready"
