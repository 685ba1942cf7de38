#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, for tests and for trying mqchat on
# a cluster (issue 15). Uses Debian's rabbitmq-server package, never its
# service: every node, its epmd and its files live under DIR.
#
#   rabbitmq-cluster.sh start DIR [BASE_PORT]   start rabbit1..3@localhost, 2 and 3 join 1
#   rabbitmq-cluster.sh status DIR              one line per node: state, pid and ports
#   rabbitmq-cluster.sh stop DIR                stop every node and epmd; nothing is left running
#   rabbitmq-cluster.sh stop-node DIR N         stop node N gracefully (its data is kept)
#   rabbitmq-cluster.sh kill-node DIR N         SIGKILL node N (a crash)
#   rabbitmq-cluster.sh start-node DIR N        start node N again; it rejoins the cluster
#
# Ports, from BASE_PORT (default 25600), for node N (1..3) at BASE + 10*(N-1):
#   +0 AMQP, +1 MQTT, +2 Erlang distribution. Shared: BASE+30..+39 for rabbitmqctl's
#   own distribution port, BASE+40 for this cluster's private epmd.
# Every listener is bound to 127.0.0.1; the management plugin is not enabled.
#
# Each node runs in its own session (setsid); its PID is also its process group,
# recorded in DIR/nodeN/node.pid, and stop signals that group only. As root the
# nodes run as the package's "rabbitmq" user, which then owns DIR.
#
# Environment: RABBITMQ_START_TIMEOUT (seconds a node may take to come up,
# default 120), RABBITMQ_STOP_TIMEOUT (seconds before a node that does not stop
# is killed, default 30), RABBITMQ_MQTT_QUEUE_TYPE (quorum, the default; classic
# only to show what a cluster without replicated queues loses).
set -euo pipefail

RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}
NODES=(1 2 3)
START_TIMEOUT=${RABBITMQ_START_TIMEOUT:-120}
STOP_TIMEOUT=${RABBITMQ_STOP_TIMEOUT:-30}
# How long a session queue outlives its last client (ms): a day, so an offline
# member keeps its queue across a test run, yet the cluster never grows forever.
SUBSCRIPTION_TTL_MS=86400000
QUEUE_TYPE=${RABBITMQ_MQTT_QUEUE_TYPE:-quorum}

say() { printf 'rabbitmq-cluster: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}
usage() {
    sed -n '5,11p' "$0" | sed 's/^# *//' >&2
    exit 2
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Is PID alive and one of ours (a rabbitmq-server wrapper or our epmd)?
ours() {
    local pid=$1 want=$2
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$want"
}

# Alive and not a zombie (an orphan's parent may be slow to reap it).
alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

read_pid() { cat "$1" 2>/dev/null || true; }

load_layout() {
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no cluster directory $1"
    [ -f "$DIR/cluster.env" ] || die "$DIR has no cluster.env: was the cluster started there?"
    # shellcheck source=/dev/null
    . "$DIR/cluster.env"
    set_layout "$BASE_PORT"
}

set_layout() {
    BASE_PORT=$1
    EPMD_PORT=$((BASE_PORT + 40))
    CTL_PORT_MIN=$((BASE_PORT + 30))
    CTL_PORT_MAX=$((BASE_PORT + 39))
}

amqp_port() { echo $((BASE_PORT + 10 * ($1 - 1))); }
mqtt_port() { echo $((BASE_PORT + 10 * ($1 - 1) + 1)); }
dist_port() { echo $((BASE_PORT + 10 * ($1 - 1) + 2)); }
node_name() { echo "rabbit$1@localhost"; }

# The prefix that runs a command as the nodes' user: as root, the package's
# "rabbitmq" user (a broker needs no root), otherwise the caller.
if [ "$(id -u)" -eq 0 ]; then
    AS_NODE_USER=(setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups --)
else
    AS_NODE_USER=()
fi

# The environment every node, epmd and rabbitmqctl of this cluster shares. HOME
# is DIR, so the Erlang cookie is DIR/.erlang.cookie (0600) and never on argv.
cluster_env() {
    export HOME="$DIR"
    export ERL_EPMD_PORT="$EPMD_PORT" ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_CTL_DIST_PORT_MIN="$CTL_PORT_MIN" RABBITMQ_CTL_DIST_PORT_MAX="$CTL_PORT_MAX"
    export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
    export LANG=C.UTF-8 LC_ALL=C.UTF-8
}

node_env() {
    local n=$1 d="$DIR/node$1"
    export RABBITMQ_NODENAME
    RABBITMQ_NODENAME=$(node_name "$n")
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT
    RABBITMQ_NODE_PORT=$(amqp_port "$n")
    export RABBITMQ_DIST_PORT
    RABBITMQ_DIST_PORT=$(dist_port "$n")
    export RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config"
    export RABBITMQ_MNESIA_BASE="$d/data" RABBITMQ_MNESIA_DIR="$d/data/mnesia"
    export RABBITMQ_PLUGINS_EXPAND_DIR="$d/data/plugins-expand"
    export RABBITMQ_LOG_BASE="$d/log" RABBITMQ_LOGS="$d/log/rabbit.log"
    export RABBITMQ_PID_FILE="$d/data/beam.pid"
    # Distribution on loopback only; never start the machine-wide epmd.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
}

ctl() {
    local n=$1
    shift
    (cluster_env && cd "$DIR" && "${AS_NODE_USER[@]}" "$RABBIT_BIN/rabbitmqctl" -q -n "$(node_name "$n")" "$@")
}

write_node_config() {
    local n=$1 conf="$DIR/node$1/rabbitmq.conf"
    {
        echo "# node $n of the cluster in $DIR (written by $(basename "$0"))"
        echo "mqtt.listeners.tcp.1 = 127.0.0.1:$(mqtt_port "$n")"
        echo "# anonymous MQTT maps to guest, and guest may only connect from loopback"
        echo "mqtt.allow_anonymous = true"
        echo "mqtt.default_user = guest"
        echo "mqtt.default_pass = guest"
        echo "loopback_users.guest = true"
        echo "# session queues replicated on every node (Raft): survive a node's loss"
        echo "mqtt.durable_queue_type = $QUEUE_TYPE"
        echo "mqtt.subscription_ttl = $SUBSCRIPTION_TTL_MS"
        echo "log.console = false"
        echo "log.file.level = info"
        if [ "$n" -ne 1 ]; then
            # Nodes 2 and 3 join node 1 while they boot (no stop_app/join_cluster
            # round trip), retrying while node 1 is unreachable.
            echo "cluster_formation.peer_discovery_backend = classic_config"
            echo "cluster_formation.classic_config.nodes.1 = $(node_name 1)"
            echo "cluster_formation.discovery_retry_limit = $START_TIMEOUT"
            echo "cluster_formation.discovery_retry_interval = 1000"
        fi
    } >"$conf"
}

log_tail() {
    local n=$1 f
    for f in "$DIR/node$n/log/rabbit.log" "$DIR/node$n/log/startup.log"; do
        if [ -s "$f" ]; then
            say "last lines of $f:"
            tail -n 25 "$f" >&2
        fi
    done
}

launch_node() {
    local n=$1 d="$DIR/node$1"
    (
        cluster_env
        node_env "$n"
        cd "$d"
        # setsid: the node is its own process group, so stop reaches beam.smp and its
        # helpers through one PID; the inner shell records that PID before exec.
        setsid sh -c 'echo $$ >"$0"; exec "$@"' "$d/node.pid" \
            "${AS_NODE_USER[@]}" "$RABBIT_BIN/rabbitmq-server" </dev/null >>"$d/log/startup.log" 2>&1 &
    )
}

# Wait until node N's MQTT listener accepts, or fail with its log.
await_node() {
    local n=$1 deadline=$(($(date +%s) + START_TIMEOUT)) pid
    while ! port_open "$(mqtt_port "$n")"; do
        pid=$(read_pid "$DIR/node$n/node.pid")
        if [ -n "$pid" ] && ! alive "$pid"; then
            say "$(node_name "$n") exited while starting"
            log_tail "$n"
            return 1
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "$(node_name "$n") did not open MQTT port $(mqtt_port "$n") within ${START_TIMEOUT} s"
            log_tail "$n"
            return 1
        fi
        sleep 0.2 # a poll interval inside the deadline
    done
    say "$(node_name "$n") accepts MQTT on 127.0.0.1:$(mqtt_port "$n")"
}

start_epmd() {
    (
        cluster_env
        setsid sh -c 'echo $$ >"$0"; exec "$@"' "$DIR/epmd.pid" \
            "${AS_NODE_USER[@]}" epmd -port "$EPMD_PORT" -address 127.0.0.1 </dev/null >>"$DIR/epmd.log" 2>&1 &
    )
    local deadline=$(($(date +%s) + 20))
    until port_open "$EPMD_PORT"; do
        [ "$(date +%s)" -lt "$deadline" ] || die "epmd did not listen on port $EPMD_PORT: $(cat "$DIR/epmd.log")"
        sleep 0.1
    done
}

# Stop the process group led by the PID in FILE: SIGTERM (RabbitMQ shuts down
# cleanly on it), then SIGKILL after the deadline. Returns 1 if there was none.
stop_group() {
    local file=$1 want=$2 sig=${3:-TERM} pid deadline
    pid=$(read_pid "$file")
    ours "$pid" "$want" || {
        rm -f "$file"
        return 1
    }
    kill -"$sig" -- "-$pid" 2>/dev/null || true
    deadline=$(($(date +%s) + STOP_TIMEOUT))
    while alive "$pid"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "pid $pid did not stop within ${STOP_TIMEOUT} s: killing its process group"
            kill -KILL -- "-$pid" 2>/dev/null || true
            deadline=$(($(date +%s) + 10))
        fi
        sleep 0.1
    done
    # The group's other members (beam.smp, erl_child_setup) end with it; wait for them.
    while pgrep -g "$pid" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || {
            kill -KILL -- "-$pid" 2>/dev/null || true
            break
        }
        sleep 0.1
    done
    rm -f "$file"
}

stop_one() {
    local n=$1 sig=${2:-TERM}
    if ! stop_group "$DIR/node$n/node.pid" rabbitmq-server "$sig"; then
        # No PID on record: if the node still answers, stop it with rabbitmqctl
        # (the cluster's cookie and epmd) and wait for its ports to close.
        if port_open "$(dist_port "$n")" && port_open "$EPMD_PORT"; then
            say "no pid for $(node_name "$n"): stopping it with rabbitmqctl"
            ctl "$n" stop || say "rabbitmqctl stop $(node_name "$n") failed"
        fi
    fi
}

cmd_start() {
    [ $# -ge 1 ] && [ $# -le 2 ] || usage
    command -v setpriv >/dev/null || die "setpriv (util-linux) is missing"
    [ -x "$RABBIT_BIN/rabbitmq-server" ] ||
        die "rabbitmq-server is not installed ($RABBIT_BIN): run scripts/install-brokers.sh"
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    set_layout "${2:-25600}"
    [ "$QUEUE_TYPE" = quorum ] || [ "$QUEUE_TYPE" = classic ] ||
        die "RABBITMQ_MQTT_QUEUE_TYPE must be quorum or classic"
    [[ "$BASE_PORT" =~ ^[0-9]+$ ]] && [ "$BASE_PORT" -ge 1024 ] && [ "$BASE_PORT" -le 65485 ] ||
        die "BASE_PORT must be a number from 1024 to 65485"
    if [ -f "$DIR/cluster.env" ]; then
        for n in "${NODES[@]}"; do
            ! ours "$(read_pid "$DIR/node$n/node.pid")" rabbitmq-server ||
                die "a node of the cluster in $DIR is still running: stop it first"
        done
    fi
    local p
    for p in $(seq "$BASE_PORT" $((BASE_PORT + 40))); do
        ! port_open "$p" || die "port $p on 127.0.0.1 is in use: pick another BASE_PORT"
    done

    # A fresh cluster each time: node data from an earlier run would remember it.
    rm -rf "$DIR"/node[123] "$DIR/cluster.env" "$DIR/.erlang.cookie"
    umask 077
    for n in "${NODES[@]}"; do mkdir -p "$DIR/node$n/log" "$DIR/node$n/data"; done
    # The cookie lets any local process that reads it run code in the nodes:
    # readable by the node user only, never passed on a command line.
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"
    chmod 600 "$DIR/.erlang.cookie"
    echo '[rabbitmq_mqtt].' >"$DIR/enabled_plugins"
    : >"$DIR/rabbitmq-env.conf" # keeps /etc/rabbitmq/rabbitmq-env.conf out
    for n in "${NODES[@]}"; do write_node_config "$n"; done
    printf 'BASE_PORT=%s\n' "$BASE_PORT" >"$DIR/cluster.env"
    if [ "$(id -u)" -eq 0 ]; then
        id rabbitmq >/dev/null 2>&1 || die "the rabbitmq user is missing: reinstall rabbitmq-server"
        chown -R rabbitmq:rabbitmq "$DIR"
        "${AS_NODE_USER[@]}" test -w "$DIR" ||
            die "user rabbitmq cannot reach $DIR (a parent directory is closed): use a directory under /tmp"
    fi

    local t0 t1
    t0=$(date +%s%N)
    start_epmd
    # One node after the other. Booting them together is no faster on two cores,
    # and RabbitMQ 3.10's MQTT client-id tracker (a Raft cluster) then loses
    # joins: a node whose join collides with another's ("cluster_change_not_permitted")
    # is never added, and answers every MQTT CONNECT with "Server unavailable".
    local failed=0
    for n in "${NODES[@]}"; do
        launch_node "$n"
        await_node "$n" || {
            failed=1
            break
        }
    done
    if [ "$failed" -eq 0 ]; then
        # Both memberships: the cluster (mnesia) and the client-id tracker (Raft).
        local members
        members=$(ctl 1 eval '{ok, M, _} = ra:members({mqtt_node, node()}),
            io:format("~b ~b", [length(rabbit_nodes:all_running()), length(M)]).' 2>&1) ||
            members="error: $members"
        if [ "${members%%ok*}" != "3 3" ]; then
            say "the nodes came up, but cluster and MQTT tracker members are '$members', not '3 3'"
            for n in "${NODES[@]}"; do log_tail "$n"; done
            failed=1
        fi
    fi
    if [ "$failed" -ne 0 ]; then
        cmd_stop "$DIR" >/dev/null 2>&1 || true
        die "cluster in $DIR failed to start (everything it started is stopped again)"
    fi
    t1=$(date +%s%N)
    say "cluster up in $(((t1 - t0) / 1000000)) ms"
    cmd_status "$DIR"
}

cmd_status() {
    [ $# -eq 1 ] || usage
    load_layout "$1"
    local n pid state
    for n in "${NODES[@]}"; do
        pid=$(read_pid "$DIR/node$n/node.pid")
        if ours "$pid" rabbitmq-server; then
            if port_open "$(mqtt_port "$n")"; then state=running; else state=starting; fi
        else
            state=stopped
            pid=-
        fi
        printf 'node=%s name=%s state=%s pid=%s mqtt=%s amqp=%s\n' "$n" "$(node_name "$n")" \
            "$state" "$pid" "$(mqtt_port "$n")" "$(amqp_port "$n")"
    done
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    load_layout "$1"
    local n pids=()
    # Nodes stop in parallel (a clean stop takes seconds each), then epmd.
    for n in "${NODES[@]}"; do
        stop_one "$n" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || true; done
    stop_group "$DIR/epmd.pid" "epmd" || true
    for n in "${NODES[@]}"; do
        ! port_open "$(mqtt_port "$n")" || die "something still listens on $(node_name "$n")'s MQTT port"
    done
    say "cluster in $DIR stopped"
}

node_arg() {
    [[ "${1:-}" =~ ^[123]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"
}

cmd_stop_node() {
    [ $# -ge 2 ] || usage
    load_layout "$1"
    node_arg "$2"
    stop_one "$2" "${3:-TERM}"
}

cmd_start_node() {
    [ $# -eq 2 ] || usage
    load_layout "$1"
    node_arg "$2"
    ! ours "$(read_pid "$DIR/node$2/node.pid")" rabbitmq-server || die "$(node_name "$2") is running"
    ours "$(read_pid "$DIR/epmd.pid")" epmd || die "the cluster in $DIR is not running (no epmd)"
    launch_node "$2"
    await_node "$2" || die "$(node_name "$2") failed to start again"
}

[ $# -ge 1 ] || usage
action=$1
shift
case "$action" in
start) cmd_start "$@" ;;
status) cmd_status "$@" ;;
stop) cmd_stop "$@" ;;
stop-node) cmd_stop_node "$@" ;;
kill-node)
    [ $# -eq 2 ] || usage
    cmd_stop_node "$1" "$2" KILL
    ;;
start-node) cmd_start_node "$@" ;;
*) usage ;;
esac
