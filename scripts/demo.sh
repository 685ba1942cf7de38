#!/usr/bin/env bash
# The demo: a local mosquitto, two chatd daemons (alice and bob) in throw-away
# directories, a room joined by both, messages sent and tailed. Set-up included;
# everything it starts is stopped by PID when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

demo=$(mktemp -d /tmp/mqchat-demo.XXXXXX)
chmod 700 "$demo"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$demo"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n' "$port" > "$demo/mosquitto.conf"
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto_bin" -c "$demo/mosquitto.conf" 2>"$demo/mosquitto.log" &
pids+=($!)

userenv() {  # the environment of one of the two users (paths have no spaces)
    echo "MQCHAT_RUNTIME_DIR=$demo/$1/run MQCHAT_STATE_DIR=$demo/$1/state MQCHAT_NAME=$1" \
        "MQCHAT_BROKER=mqtt://127.0.0.1:$port XDG_CONFIG_HOME=$demo/$1/config"
}
# env execs the command, so "$!" after "env ... &" is the command's own PID.
# shellcheck disable=SC2046
as() { local who=$1; shift; env $(userenv "$who") "$@"; }

for who in alice bob; do
    mkdir -m 700 -p "$demo/$who"
    # shellcheck disable=SC2046
    env $(userenv "$who") chatd 2>"$demo/$who/chatd.log" &
    pids+=($!)
done
for who in alice bob; do
    for _ in $(seq 100); do
        as "$who" chatctl --timeout 1 status >/dev/null 2>&1 && break
        sleep 0.1  # waiting for the daemon to come up, bounded
    done
done

echo "== both join the room 'lobby' (the passphrase comes on stdin, never argv)"
for who in alice bob; do
    echo "correct horse battery staple" | as "$who" chatctl join lobby
done

echo "== bob tails the room in the background"
# shellcheck disable=SC2046
env $(userenv bob) chatctl tail lobby --since 0 > "$demo/bob-tail.txt" &  # from seq 0: no race with the sends
tail_pid=$!
pids+=("$tail_pid")

echo "== alice sends, one message from argv and two from stdin"
as alice chatctl send lobby "hello bob, this crossed the broker encrypted"
printf 'a line from a pipe\nand another\n' | as alice chatctl send lobby
as bob chatctl send lobby "hi alice!"

echo "== what bob's tail printed"
for _ in $(seq 100); do
    [ "$(wc -l < "$demo/bob-tail.txt")" -ge 4 ] && break
    sleep 0.1  # waiting for the four lines, bounded
done
cat "$demo/bob-tail.txt"

echo "== alice's view as JSON (chatctl tail --json | jq works the same)"
as alice chatctl tail lobby --no-follow -n 2 --json

echo "== alice's status"
as alice chatctl status
