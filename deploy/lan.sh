#!/usr/bin/env bash
# A demo LAN of Ferry hubs on one machine, built from network namespaces:
#
#   ferry-lan-br   a Linux bridge (br0)
#   ferry-lan-hI   one namespace per hub: lo up, lan0 = 10.213.0.(10+I)/24,
#                  a veth pair to bridge port hI in ferry-lan-br
#
# The addresses exist only inside these namespaces and the hubs run inside
# them, so mDNS (on by default, on every interface that is up) sees only the
# demo LAN: nothing reaches this machine's own interfaces.
#
#   deploy/lan.sh up N [--ferry PATH] [--cluster-id ID]
#                         build the LAN and start N hubs (again from scratch
#                         if it is up); data dirs and logs in /tmp/ferry-lan/
#   deploy/lan.sh status  every hub's `ferry peers`
#   deploy/lan.sh down    stop the hubs (SIGTERM, then SIGKILL) and remove
#                         every namespace, link and /tmp/ferry-lan/
#
# Needs root (ip netns) and iproute2 (scripts/install-deps). The ferry binary
# is --ferry PATH, else $FERRY_BIN, else `ferry` on PATH, else the workspace's
# target/{debug,release}/ferry (honouring CARGO_TARGET_DIR).
set -euo pipefail

PREFIX=ferry-lan-
BRIDGE_NS=${PREFIX}br
STATE_DIR=/tmp/ferry-lan
# Hub 1 founds the cluster and writes the operator credential the CLI uses.
CREDENTIAL=$STATE_DIR/h1/data/admin.cred
export FERRY_CREDENTIALS=${FERRY_CREDENTIALS:-$CREDENTIAL}
SUBNET=10.213.0
FIRST_HOST=10
PORT=7411
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

die() {
  echo "lan.sh: $*" >&2
  exit 1
}

need_root() {
  [[ $(id -u) -eq 0 ]] || die "needs root to create network namespaces (try: sudo $0 $*)"
  command -v ip >/dev/null || die "iproute2's ip is missing (scripts/install-deps)"
}

find_ferry() {
  local given=$1
  if [[ -n $given ]]; then
    [[ -x $given ]] || die "--ferry $given is not an executable"
    realpath "$given"
    return
  fi
  if [[ -n ${FERRY_BIN:-} && -x ${FERRY_BIN} ]]; then
    realpath "$FERRY_BIN"
    return
  fi
  if command -v ferry >/dev/null; then
    command -v ferry
    return
  fi
  local target=${CARGO_TARGET_DIR:-$REPO/target}
  for candidate in "$target/debug/ferry" "$target/release/ferry"; do
    if [[ -x $candidate ]]; then
      echo "$candidate"
      return
    fi
  done
  die "no ferry binary found: build it (cargo build --bin ferry) or pass --ferry PATH"
}

lan_namespaces() {
  ip netns list | awk '{print $1}' | grep "^${PREFIX}" || true
}

hub_namespaces() {
  lan_namespaces | grep -E "^${PREFIX}h[0-9]+$" | sort -V || true
}

# Stops every process in namespace $1: SIGTERM (hubs say goodbye), then
# SIGKILL after 5 s.
stop_processes_in() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  [[ -z $pids ]] && return 0
  # shellcheck disable=SC2086
  kill -TERM $pids 2>/dev/null || true
  for _ in $(seq 50); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -z $pids ]] && return 0
    sleep 0.1
  done
  echo "lan.sh: killing what is left in $ns: $pids" >&2
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 50); do
    [[ -z $(ip netns pids "$ns" 2>/dev/null || true) ]] && return 0
    sleep 0.1
  done
}

cmd_down() {
  need_root down
  local namespaces ns
  namespaces=$(lan_namespaces)
  # Hubs first, in parallel, so each sees the others' goodbyes as it goes.
  for ns in $namespaces; do
    stop_processes_in "$ns" &
  done
  wait
  for ns in $namespaces; do
    ip netns delete "$ns"
  done
  rm -rf "$STATE_DIR"
  if [[ -n $namespaces ]]; then
    echo "ferry LAN down: removed $(echo "$namespaces" | wc -w) namespaces and $STATE_DIR"
  else
    echo "ferry LAN is not up; nothing to remove"
  fi
}

add_host() {
  local i=$1 ns=${PREFIX}h$1
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # Both ends are created inside their namespaces: nothing appears in this
  # machine's own network, even for a moment.
  ip link add lan0 netns "$ns" type veth peer name "h$i" netns "$BRIDGE_NS"
  ip -n "$BRIDGE_NS" link set "h$i" master br0
  ip -n "$BRIDGE_NS" link set "h$i" up
  ip -n "$ns" addr add "$SUBNET.$((FIRST_HOST + i))/24" dev lan0
  ip -n "$ns" link set lan0 up
}

# Hub 1 founds the cluster (its CA, and the operator credential every CLI
# call here uses); the others join it with a token (start_hub I FERRY
# CLUSTER TOKEN).
start_hub() {
  local i=$1 ferry=$2 cluster=$3 token=${4:-} ns=${PREFIX}h$1 dir=$STATE_DIR/h$1
  local address=$SUBNET.$((FIRST_HOST + i)):$PORT
  local join=()
  [[ -n $token ]] && join=(--join "$token" --peer "$SUBNET.$((FIRST_HOST + 1)):$PORT")
  mkdir -p "$dir/data"
  # setsid: the hub outlives this script and the terminal's Ctrl-C.
  ip netns exec "$ns" setsid "$ferry" agent \
    --data-dir "$dir/data" \
    --listen "$address" \
    --name "lan-h$i" \
    --cluster-id "$cluster" \
    "${join[@]}" \
    </dev/null >"$dir/agent.log" 2>&1 &
  echo $! >"$dir/pid"
  echo "$address" >"$dir/address"
}

wait_for_hub() {
  local i=$1 ferry=$2 ns=${PREFIX}h$1 address
  address=$(cat "$STATE_DIR/h$i/address")
  for _ in $(seq 300); do
    if ip netns exec "$ns" "$ferry" --hub "$address" info >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$STATE_DIR/h$i/pid")" 2>/dev/null; then
      echo "lan.sh: hub $i exited; its log:" >&2
      cat "$STATE_DIR/h$i/agent.log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "lan.sh: hub $i did not answer within 30 s; its log: $STATE_DIR/h$i/agent.log" >&2
  return 1
}

cmd_up() {
  local count=${1:-} ferry_arg="" cluster=ferry-lan
  [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 200)) || usage
  shift
  while [[ $# -gt 0 ]]; do
    case $1 in
      --ferry)
        [[ $# -ge 2 ]] || usage
        ferry_arg=$2
        shift 2
        ;;
      --cluster-id)
        [[ $# -ge 2 ]] || usage
        cluster=$2
        shift 2
        ;;
      *) usage ;;
    esac
  done
  need_root up
  local ferry
  ferry=$(find_ferry "$ferry_arg")
  if [[ -n $(lan_namespaces) ]]; then
    echo "ferry LAN is already up: rebuilding it from scratch"
    cmd_down >/dev/null
  fi

  mkdir -p "$STATE_DIR"
  echo "$ferry" >"$STATE_DIR/ferry"
  ip netns add "$BRIDGE_NS"
  ip -n "$BRIDGE_NS" link set lo up
  ip -n "$BRIDGE_NS" link add br0 type bridge
  ip -n "$BRIDGE_NS" link set br0 up
  local i
  for ((i = 1; i <= count; i++)); do
    add_host "$i"
  done
  start_hub 1 "$ferry" "$cluster"
  wait_for_hub 1 "$ferry" || die "hub 1 did not start; 'deploy/lan.sh down' removes the LAN"
  if ((count > 1)); then
    local token
    token=$(ip netns exec "${PREFIX}h1" "$ferry" --hub "$(cat "$STATE_DIR/h1/address")" \
      cluster token create --uses $((count - 1)) --ttl 10m 2>/dev/null) ||
      die "hub 1 made no join token; 'deploy/lan.sh down' removes the LAN"
    for ((i = 2; i <= count; i++)); do
      start_hub "$i" "$ferry" "$cluster" "$token"
    done
    for ((i = 2; i <= count; i++)); do
      wait_for_hub "$i" "$ferry" || die "hub $i did not start; 'deploy/lan.sh down' removes the LAN"
    done
  fi

  echo "ferry LAN up: $count hubs on $SUBNET.0/24, cluster $cluster, ferry $ferry"
  for ((i = 1; i <= count; i++)); do
    printf '  lan-h%-3s %-18s namespace %-14s log %s\n' \
      "$i" "$(cat "$STATE_DIR/h$i/address")" "${PREFIX}h$i" "$STATE_DIR/h$i/agent.log"
  done
  cat <<EOF

Every hub joined hub 1's cluster (mutual TLS); the CLI uses hub 1's operator
credential. Run it inside a hub's namespace, e.g. hub 1:
  export FERRY_CREDENTIALS=$CREDENTIAL
  ip netns exec ${PREFIX}h1 $ferry --hub $SUBNET.$((FIRST_HOST + 1)):$PORT peers
  ip netns exec ${PREFIX}h1 $ferry --hub $SUBNET.$((FIRST_HOST + 1)):$PORT ps
Stop a hub the hard way and watch the others mark it down:
  kill -9 \$(cat $STATE_DIR/h1/pid)
Cut a hub's cable / plug it back:
  ip -n $BRIDGE_NS link set h1 down    /    ip -n $BRIDGE_NS link set h1 up
Every hub's peers:  $0 status
Tear it all down:   $0 down
EOF
}

cmd_status() {
  need_root status
  local namespaces ns i address ferry
  namespaces=$(hub_namespaces)
  [[ -n $namespaces ]] || die "the ferry LAN is not up (deploy/lan.sh up N)"
  ferry=$(cat "$STATE_DIR/ferry" 2>/dev/null || find_ferry "")
  for ns in $namespaces; do
    i=${ns#"${PREFIX}h"}
    address=$(cat "$STATE_DIR/h$i/address" 2>/dev/null || echo "$SUBNET.$((FIRST_HOST + i)):$PORT")
    echo "== lan-h$i ($address, namespace $ns)"
    ip netns exec "$ns" "$ferry" --hub "$address" peers || true
  done
}

case ${1:-} in
  up)
    shift
    cmd_up "$@"
    ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) usage ;;
esac
