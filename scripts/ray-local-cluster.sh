#!/usr/bin/env bash
# A two-node Ray cluster on this machine (one CPU per node, token authentication on) for the
# tests and benchmarks: starts it, runs COMMAND against it, stops it.
#   scripts/ray-local-cluster.sh DIR COMMAND...
# Ray advertises the machine's routable address and listens on every interface, so all of it
# runs in private network and PID namespaces that have only loopback (unshare: needs root,
# util-linux and iproute2); whatever is left is killed with the namespace. COMMAND runs with
# RAY_ADDRESS=127.0.0.1:6380, the token in RAY_AUTH_TOKEN_PATH and HOME=DIR (Ray keeps nothing
# in the real home); its output goes to DIR/out.log and the processes left after `ray stop`
# to DIR/left.log. DIR should be short: Ray's socket paths must stay under 108 characters.
# Env: PY, the Python whose ray to use (default: python3 on PATH). NODE_CPUS: the CPUs each
# node offers (default 1; more than the cores only to start more workers than cores). KILL_NODE_WHEN: a regular
# expression; once COMMAND's output has a line matching it, the second node's raylet and its
# workers are SIGKILLed (their pids in DIR/killed). SECOND_NODE_PYTHONPATH: the second node's
# processes import from there first (another deepnet on one node). Exit status: COMMAND's.
set -u
if [ "$$" != 1 ]; then
  exec unshare -n -p -f --mount-proc --kill-child bash "$0" "$@"
fi
DIR=$1
shift
PY=${PY:-python3}
BIN=$(dirname "$(command -v "$PY")")
ip link set lo up
export HOME=$DIR RAY_ADDRESS=127.0.0.1:6380
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/token
"$PY" -c "import secrets; print(secrets.token_hex(32))" >"$RAY_AUTH_TOKEN_PATH"
# a dead node is noticed within seconds (1 s health checks, 3 missed)
export RAY_health_check_period_ms=1000 RAY_health_check_failure_threshold=3 \
  RAY_health_check_timeout_ms=1000 RAY_health_check_initial_delay_ms=0
NODE="--num-cpus ${NODE_CPUS:-1} --node-ip-address 127.0.0.1 --object-store-memory 100000000"
NODE="$NODE --disable-usage-stats"
"$BIN/ray" start --head --port 6380 --include-dashboard=false --temp-dir "$DIR/rt" $NODE \
  >"$DIR/head.log" 2>&1 || { cat "$DIR/head.log"; exit 3; }
PYTHONPATH=${SECOND_NODE_PYTHONPATH:-${PYTHONPATH:-}} \
  "$BIN/ray" start --address 127.0.0.1:6380 --node-manager-port 6402 $NODE \
  >"$DIR/node2.log" 2>&1 || { cat "$DIR/node2.log"; exit 3; }
"$@" >"$DIR/out.log" 2>&1 &
COMMAND=$!
if [ -n "${KILL_NODE_WHEN:-}" ]; then
  while kill -0 $COMMAND 2>/dev/null && ! grep -Eq -- "$KILL_NODE_WHEN" "$DIR/out.log"; do
    sleep 0.1
  done
  RAYLET=$(pgrep -f -- "raylet/raylet .*--node_manager_port=6402")
  VICTIMS="$RAYLET $(pgrep -P "$RAYLET" | tr '\n' ' ')"
  kill -9 $VICTIMS && echo "$VICTIMS" >"$DIR/killed"
fi
wait $COMMAND
RC=$?
"$BIN/ray" stop --force >"$DIR/stop.log" 2>&1
ps -eo args= >"$DIR/left.log"
exit $RC
