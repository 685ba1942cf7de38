#!/usr/bin/env bash
# The demo: a local mosquitto, two chatd daemons (alice and bob) in throw-away
# directories; alice creates a room and invites bob, as README recommends; messages
# sent and tailed. Set-up included; everything it starts is stopped by PID when it ends.
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

echo "== alice creates the room 'team' (a random 256-bit key, no passphrase)"
as alice chatctl create team

echo "== alice prints an invite: a secret line, kept in a 0600 file, never on a command line"
(umask 077 && as alice chatctl invite team > "$demo/team.invite" 2>/dev/null)

echo "== bob joins by invite (read from stdin)"
as bob chatctl join --invite < "$demo/team.invite"
rm -f "$demo/team.invite"

echo "== bob tails the room in the background"
# shellcheck disable=SC2046
env $(userenv bob) chatctl tail team --since 0 > "$demo/bob-tail.txt" &  # from seq 0: no race with the sends
tail_pid=$!
pids+=("$tail_pid")

echo "== alice sends, one message from argv and two from stdin"
as alice chatctl send team "hello bob, this crossed the broker encrypted"
printf 'a line from a pipe\nand another\n' | as alice chatctl send team
as bob chatctl send team "hi alice!"

echo "== what bob's tail printed"
for _ in $(seq 100); do
    [ "$(wc -l < "$demo/bob-tail.txt")" -ge 4 ] && break
    sleep 0.1  # waiting for the four lines, bounded
done
cat "$demo/bob-tail.txt"

echo "== alice's view as JSON (chatctl tail --json | jq works the same)"
as alice chatctl tail team --no-follow -n 2 --json

echo "== who alice's next rekey is sealed to (fingerprints as \`chatctl trust\` takes them)"
as alice chatctl members team

echo "== alice's status"
as alice chatctl status
