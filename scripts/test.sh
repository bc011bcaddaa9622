#!/usr/bin/env bash
# test.sh: the project's test command. go vet, then the whole suite twice:
#
#   1. the fakes run: KAFKA_BROKERS, REDIS_ADDR and REDIS_CLUSTER_ADDRS unset,
#      so every test uses in-process fakes (kfake, miniredis);
#   2. the real run: the same tests against the real Kafka and Redis named by
#      those variables, when both KAFKA_BROKERS and REDIS_ADDR are set
#      (eval "$(scripts/infra.sh up)").
#
# Both runs happen even when the first fails; the script fails if either
# did. With POSTBACKD_REQUIRE_REAL=1 (as .ci/run sets) a missing real run is
# a failure, never a silent fallback to the fakes, and so is a test skipped
# in the real run: there every test that needs a real server must run.
#
# Settings (environment):
#   POSTBACKD_TEST_PKGS     packages, space separated (default ./...)
#   POSTBACKD_TEST_TIMEOUT  go test -timeout of each run (default 20m)
#   POSTBACKD_TEST_FLAGS    extra go test flags, space separated (e.g. -race)
#   POSTBACKD_TEST_RUNS     which steps, of "vet fakes real" (default all three)
#   POSTBACKD_TEST_LABEL    name of the real run in the output (default real)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -r -a pkgs <<<"${POSTBACKD_TEST_PKGS:-./...}"
read -r -a extra <<<"${POSTBACKD_TEST_FLAGS:-}"
timeout=${POSTBACKD_TEST_TIMEOUT:-20m}
steps=" ${POSTBACKD_TEST_RUNS:-vet fakes real} "
label=${POSTBACKD_TEST_LABEL:-real}
go_test=(go test -json -count=1 -timeout "$timeout" ${extra[@]+"${extra[@]}"} "${pkgs[@]}")

banner() { printf '\n===== %s =====\n' "$*"; }

# testreport turns 'go test -json' back into plain go test output and closes
# with "LABEL: N passed, N failed, N skipped"; built once, outside the clone.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
report_bin=$tmp/testreport
go build -o "$report_bin" scripts/testreport.go

# run LABEL REPORT_FLAGS [env args]: one run of the suite; prints its
# duration.
run_suite() {
	local label=$1 flags=$2 t0=$SECONDS rc=0
	shift 2
	# shellcheck disable=SC2086 # flags is a word list on purpose
	"$@" "${go_test[@]}" 2>&1 | "$report_bin" -label "$label" -require-tests $flags | tee "$tmp/$label.out" || rc=$?
	echo "$label run took $((SECONDS - t0))s"
	counts[$label]=$(grep -E "^$label: [0-9]+ passed" "$tmp/$label.out" | tail -n1 || true)
	return "$rc"
}

declare -A counts=()

vet="not run (POSTBACKD_TEST_RUNS)"
if [[ $steps == *" vet "* ]]; then
	banner "go vet ${pkgs[*]}"
	vet=ok
	go vet "${pkgs[@]}" || vet=FAILED
fi

fakes="not run (POSTBACKD_TEST_RUNS)"
if [[ $steps == *" fakes "* ]]; then
	banner "fakes run (in-process kfake and miniredis): go test -count=1 -timeout $timeout ${pkgs[*]}"
	fakes=ok
	run_suite fakes "" env -u KAFKA_BROKERS -u REDIS_ADDR -u REDIS_CLUSTER_ADDRS \
		-u KAFKA_SASL_BROKERS -u KAFKA_TLS_BROKERS || fakes=FAILED
fi

real="not run: it needs both KAFKA_BROKERS and REDIS_ADDR (KAFKA_BROKERS=${KAFKA_BROKERS:-unset} REDIS_ADDR=${REDIS_ADDR:-unset})"
real_flags=""
if [[ ${POSTBACKD_REQUIRE_REAL:-0} == 1 ]]; then
	real_flags=-forbid-skips
fi
if [[ $steps != *" real "* ]]; then
	real="not run (POSTBACKD_TEST_RUNS)"
elif [[ -n ${KAFKA_BROKERS:-} && -n ${REDIS_ADDR:-} ]]; then
	banner "$label run (KAFKA_BROKERS=${KAFKA_BROKERS:-unset} REDIS_ADDR=${REDIS_ADDR:-unset} REDIS_CLUSTER_ADDRS=${REDIS_CLUSTER_ADDRS:-unset}): go test -count=1 -timeout $timeout ${pkgs[*]}"
	real=ok
	run_suite "$label" "$real_flags" env || real=FAILED
fi

banner "summary"
echo "go vet:    $vet"
echo "fakes run: $fakes${counts[fakes]:+ (${counts[fakes]})}"
echo "$label run:  $real${counts[$label]:+ (${counts[$label]})}"

status=0
[[ $vet == ok || $vet == not\ run* ]] || status=1
[[ $fakes == ok || $fakes == not\ run* ]] || status=1
if [[ $real == not\ run* ]]; then
	if [[ ${POSTBACKD_REQUIRE_REAL:-0} == 1 && $steps == *" real "* ]]; then
		echo "POSTBACKD_REQUIRE_REAL=1 but the real run did not happen" >&2
		status=1
	fi
elif [[ $real != ok ]]; then
	status=1
fi
exit "$status"
