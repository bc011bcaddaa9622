#!/usr/bin/env bash
# infra.sh: the real Kafka and Redis (single node and cluster) that the test
# suite and a local postbackd use, all on loopback.
#
# Usage:
#   eval "$(scripts/infra.sh up)"   install what is missing, start, wait, and
#                                    print the export lines on stdout
#   scripts/infra.sh env             print the export lines again
#   scripts/infra.sh down            stop everything
#   scripts/infra.sh clean           stop everything and remove its state
#
# 'up' is safe to repeat: running servers are kept as they are.
# Settings: those of kafka.sh and redis.sh; INFRA_REDIS_CLUSTER=0 skips the
# cluster. Progress goes to stderr so stdout carries only the export lines.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
LOG_TAG=infra
cluster=${INFRA_REDIS_CLUSTER:-1}

env_lines() {
	"$here/kafka.sh" env
	# Includes REDIS_CLUSTER_ADDRS when the cluster runs.
	"$here/redis.sh" env
}

case ${1:-} in
up)
	t0=$SECONDS
	"$here/redis.sh" install
	"$here/kafka.sh" install
	"$here/kafka.sh" start
	"$here/redis.sh" start
	if [[ $cluster == 1 ]]; then "$here/redis.sh" start-cluster; fi
	"$here/redis.sh" wait
	if [[ $cluster == 1 ]]; then "$here/redis.sh" wait-cluster; fi
	"$here/kafka.sh" wait
	log "infrastructure up in $((SECONDS - t0))s"
	env_lines
	;;
env) env_lines ;;
down)
	"$here/kafka.sh" stop
	"$here/redis.sh" stop
	"$here/redis.sh" stop-cluster
	;;
clean)
	"$here/kafka.sh" clean
	"$here/redis.sh" clean
	;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
