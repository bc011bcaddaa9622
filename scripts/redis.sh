#!/usr/bin/env bash
# redis.sh: real Redis servers on loopback for tests and local runs: one
# plain node, and a three-node Redis Cluster for the hash-tag tests.
#
# Usage: scripts/redis.sh COMMAND
#
#   install        apt-get install redis-server (skipped when present)
#   start          one node on REDIS_PORT (no-op when running)
#   wait           block until it answers PING
#   stop           stop it (SIGTERM, bounded wait, then SIGKILL)
#   restart        stop it and start it again keeping its data (with
#                  REDIS_PERSIST=1 it reloads its append-only file)
#   pid            print the single node's pid (for fault injection)
#   clean          stop both the node and the cluster, remove their state
#   env            print 'export REDIS_ADDR=...' (and REDIS_CLUSTER_ADDRS
#                  when the cluster runs)
#   start-cluster  three cluster nodes, joined into one cluster (no-op when up)
#   wait-cluster   block until every node reports cluster_state:ok
#   stop-cluster   stop the cluster nodes
#   env-cluster    print 'export REDIS_CLUSTER_ADDRS=127.0.0.1:P1,...'
#   status         exit 0 when the single node runs
#   logs [N]       print the ends of the server logs
#
# Settings (environment):
#   REDIS_PORT           16379
#   REDIS_CLUSTER_PORTS  "17001 17002 17003"
#   REDIS_WAIT_SECONDS   30
#   REDIS_PERSIST        0; 1 starts the single node with the append-only
#                        file on (fsync every second), for durability tests
#   POSTBACKD_STATE      state goes to $POSTBACKD_STATE/redis-PORT
#
# Test servers keep nothing on disk (--save '' --appendonly no), and a
# cluster node is started empty so 'cluster create' always applies.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

REDIS_PORT=${REDIS_PORT:-16379}
REDIS_CLUSTER_PORTS=${REDIS_CLUSTER_PORTS:-17001 17002 17003}
REDIS_WAIT_SECONDS=${REDIS_WAIT_SECONDS:-30}
REDIS_PERSIST=${REDIS_PERSIST:-0}
read -r -a cluster_ports <<<"$REDIS_CLUSTER_PORTS"
LOG_TAG="redis"

node_state() { echo "$POSTBACKD_STATE/redis-$1"; }

# node_running PORT: our redis-server, by its pid file, serves PORT.
node_running() {
	local pid
	pid=$(read_pidfile "$(node_state "$1")/redis.pid")
	# redis-server sets its title to "redis-server 127.0.0.1:PORT ..."; the
	# trailing space keeps port 1637 from matching 16379.
	pid_matches "$pid" "127.0.0.1:$1 "
}

ping() { [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# start_node PORT EXTRA_ARG...: starts one daemonized redis-server unless it
# already runs. A node that is not running starts from an empty folder.
start_node() {
	local port=$1 dir
	shift
	dir=$(node_state "$port")
	if node_running "$port"; then
		log "redis on $port already running (pid $(read_pidfile "$dir/redis.pid"))"
		return 0
	fi
	port_listening "$port" && die "port $port is taken by another process; choose another port"
	command -v redis-server >/dev/null || die "redis-server is missing: run '$0 install'"
	rm -rf "$dir"
	mkdir -p "$dir"
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log" "$@"
	local deadline=$((SECONDS + 5))
	while [[ ! -s $dir/redis.pid ]] && ((SECONDS < deadline)); do sleep 0.05; done
	node_running "$port" || {
		tail_log "$dir/redis.log" 40
		die "redis on $port did not start"
	}
	log "started redis on 127.0.0.1:$port (pid $(read_pidfile "$dir/redis.pid"), log $dir/redis.log)"
}

stop_node() {
	local port=$1 dir pid
	dir=$(node_state "$port")
	pid=$(read_pidfile "$dir/redis.pid")
	if node_running "$port"; then
		stop_pid "$pid" "redis on $port" 15
	else
		log "redis on $port not running"
	fi
	rm -f "$dir/redis.pid"
}

# wait_until SECONDS WHAT CHECK...: runs CHECK until it succeeds or the
# deadline passes (then prints the logs and fails).
wait_until() {
	local limit=$1 what=$2 t0=$SECONDS
	shift 2
	local deadline=$((SECONDS + limit))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			cmd_logs 40
			die "$what not ready within ${limit}s"
		fi
		sleep 0.2 # polling readiness, bounded by the deadline above
	done
	log "$what ready after $((SECONDS - t0))s"
}

cluster_ok() {
	local p info
	for p in "${cluster_ports[@]}"; do
		info=$(timeout 5 redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null) || return 1
		[[ $info == *cluster_state:ok* && $info == *"cluster_known_nodes:${#cluster_ports[@]}"* ]] || return 1
	done
}

all_ping() {
	local p
	for p in "${cluster_ports[@]}"; do ping "$p" || return 1; done
}

cmd_start_cluster() {
	local p addrs=()
	for p in "${cluster_ports[@]}"; do
		start_node "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000
		addrs+=("127.0.0.1:$p")
	done
	wait_until "$REDIS_WAIT_SECONDS" "redis cluster nodes" all_ping
	if cluster_ok; then
		log "redis cluster already formed"
		return 0
	fi
	# Every slot on the three masters, no replicas: enough for keys of one
	# hash tag to land on one node and different tags to spread.
	local out
	if ! out=$(redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes 2>&1); then
		printf '%s\n' "$out" >&2
		die "redis-cli --cluster create failed"
	fi
	log "redis cluster created on ${addrs[*]}"
}

cmd_env() {
	echo "export REDIS_ADDR=127.0.0.1:$REDIS_PORT"
	if node_running "${cluster_ports[0]}"; then cmd_env_cluster; fi
}

cmd_env_cluster() {
	local p list=""
	for p in "${cluster_ports[@]}"; do list+=${list:+,}127.0.0.1:$p; done
	echo "export REDIS_CLUSTER_ADDRS=$list"
}

cmd_logs() {
	local p
	for p in "$REDIS_PORT" "${cluster_ports[@]}"; do
		[[ -f $(node_state "$p")/redis.log ]] && tail_log "$(node_state "$p")/redis.log" "${1:-40}"
	done
	return 0
}

case ${1:-} in
install)
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
		apt_install redis-server
	fi
	;;
start)
	if [[ $REDIS_PERSIST == 1 ]]; then
		start_node "$REDIS_PORT" --appendonly yes --appendfsync everysec
	else
		start_node "$REDIS_PORT"
	fi
	;;
restart)
	# The same command line again, in the same folder: with the append-only
	# file on, the data comes back.
	dir=$(node_state "$REDIS_PORT")
	args=(--appendonly no)
	if [[ $REDIS_PERSIST == 1 ]]; then args=(--appendonly yes --appendfsync everysec); fi
	stop_node "$REDIS_PORT"
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' "${args[@]}" \
		--daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
	wait_until "$REDIS_WAIT_SECONDS" "redis on $REDIS_PORT" ping "$REDIS_PORT"
	;;
pid) read_pidfile "$(node_state "$REDIS_PORT")/redis.pid" ;;
wait) wait_until "$REDIS_WAIT_SECONDS" "redis on $REDIS_PORT" ping "$REDIS_PORT" ;;
stop) stop_node "$REDIS_PORT" ;;
start-cluster) cmd_start_cluster ;;
wait-cluster) wait_until "$REDIS_WAIT_SECONDS" "redis cluster" cluster_ok ;;
stop-cluster) for p in "${cluster_ports[@]}"; do stop_node "$p"; done ;;
clean)
	for p in "$REDIS_PORT" "${cluster_ports[@]}"; do
		stop_node "$p"
		rm -rf "$(node_state "$p")"
	done
	;;
env) cmd_env ;;
env-cluster) cmd_env_cluster ;;
status) node_running "$REDIS_PORT" ;;
logs) cmd_logs "${2:-40}" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
