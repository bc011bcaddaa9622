#!/usr/bin/env bash
# chaos.sh: the chaos suite. Starts a Kafka broker and a Redis of its own
# (Redis with its append-only file on), runs e2e's TestChaos (go test -tags
# chaos) against them — three postbackd members, a seeded stream on all four
# topics, kill -9s, partner faults, Redis hung and restarted, the broker
# restarted — prints the oracle's table, and stops what it started.
#
# Usage: scripts/chaos.sh [ci|full]     (default ci)
#
#   ci    about 9 000 events over 1 000 clicks, 4 kills: a few minutes
#   full  about 190 000 events over 20 000 clicks, 10 kills
#
# The table is also written to CHAOS_REPORT (default
# $POSTBACKD_STATE/chaos-report.md). Servers: Kafka on CHAOS_KAFKA_PORT
# (default 19692, and the three ports after it), Redis on CHAOS_REDIS_PORT
# (default 16679), state under $POSTBACKD_STATE (default /tmp/postbackd-chaos),
# so a chaos run never touches the servers of the test suite.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
LOG_TAG=chaos

profile=${1:-ci}
case $profile in
ci) timeout=20m ;;
full) timeout=75m ;;
*) die "unknown profile $profile: want ci or full" ;;
esac

export POSTBACKD_STATE=${CHAOS_STATE:-/tmp/postbackd-chaos}
export KAFKA_PORT=${CHAOS_KAFKA_PORT:-19692}
export KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
export KAFKA_SASL_PORT=$((KAFKA_PORT + 2))
export KAFKA_TLS_PORT=$((KAFKA_PORT + 3))
export REDIS_PORT=${CHAOS_REDIS_PORT:-16679}
export REDIS_PERSIST=1
export CHAOS_REDIS_PORT=$REDIS_PORT
export CHAOS_PROFILE=$profile
export CHAOS_REPORT=${CHAOS_REPORT:-$POSTBACKD_STATE/chaos-report.md}

cleanup() {
	local rc=$?
	set +e
	if ((rc != 0)); then
		"$here/kafka.sh" logs 60
		"$here/redis.sh" logs 20
	fi
	"$here/kafka.sh" stop
	"$here/redis.sh" stop
	exit "$rc"
}
trap cleanup EXIT

mkdir -p "$POSTBACKD_STATE"
"$here/redis.sh" install
"$here/kafka.sh" install
"$here/redis.sh" start
"$here/kafka.sh" start
"$here/redis.sh" wait
"$here/kafka.sh" wait
eval "$("$here/kafka.sh" env)"
export KAFKA_BROKERS REDIS_ADDR=127.0.0.1:$REDIS_PORT
# The suite's own tests must not see the secured listeners of this broker.
unset KAFKA_SASL_BROKERS KAFKA_TLS_BROKERS REDIS_CLUSTER_ADDRS

log "profile $profile: Kafka $KAFKA_BROKERS, Redis $REDIS_ADDR (append-only), report $CHAOS_REPORT"
cd "$here/.."
go test -tags chaos -count=1 -timeout "$timeout" -run "${CHAOS_RUN:-^TestChaos$}" -v ./e2e/ 2>&1 |
	grep -v '^=== \(RUN\|PAUSE\|CONT\)' || { cat "$CHAOS_REPORT" 2>/dev/null; exit 1; }
echo
cat "$CHAOS_REPORT"
