#!/usr/bin/env bash
# fuzz.sh: runs every fuzz target of the module for a bounded time each.
#
#   scripts/fuzz.sh            each target for FUZZTIME (default 10s)
#
# A failing input is written by go test under the package's
# testdata/fuzz/<Target>/ and printed here: commit it, so that it stays in
# the seed corpus that every plain `go test` runs. Exits non-zero when any
# target failed.
#
# A run that fails with only "context deadline exceeded" at the end of its
# -fuzztime and writes no failing input is Go's own fuzzing coordinator
# racing its deadline (golang/go#75804, fixed in Go 1.27), not a finding: it
# is run once more, and fails only if it does so again.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}
status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# inputs: how many inputs a target's corpus directory holds (0 if none).
inputs() {
	if [[ -d $1 ]]; then find "$1" -type f | wc -l; else echo 0; fi
}

# deadline_race: the run's only failure is the coordinator's deadline error.
deadline_race() {
	grep -q '^    context deadline exceeded$' "$1" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$1"
}
while read -r pkg; do
	[[ -n $pkg ]] || continue
	dir=$(go list -f '{{.Dir}}' "$pkg")
	while read -r target; do
		for try in 1 2; do
			printf '\n----- %s %s (%s)\n' "$pkg" "$target" "$fuzztime"
			before=$(inputs "$dir/testdata/fuzz/$target")
			if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"; then
				break
			fi
			after=$(inputs "$dir/testdata/fuzz/$target")
			if [[ $try == 1 && $after == "$before" ]] && deadline_race "$log"; then
				echo "fuzz: $pkg $target stopped on the coordinator's deadline race (golang/go#75804), no input written; running it once more" >&2
				continue
			fi
			status=1
			echo "FAILED: $pkg $target; the failing input is under $dir/testdata/fuzz/$target/: commit it as a seed" >&2
			git status --porcelain -- "$dir/testdata/fuzz" >&2 || true
			break
		done
	done < <(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u)
done < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./... | while read -r p; do
	d=$(go list -f '{{.Dir}}' "$p")
	if grep -qs '^func Fuzz' "$d"/*_test.go; then echo "$p"; fi
done)
exit "$status"
