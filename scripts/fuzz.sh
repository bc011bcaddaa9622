#!/usr/bin/env bash
# fuzz.sh: runs every fuzz target of the module for a bounded time each.
#
#   scripts/fuzz.sh            each target for FUZZTIME (default 10s)
#
# A failing input is written by go test under the package's
# testdata/fuzz/<Target>/ and printed here: commit it, so that it stays in
# the seed corpus that every plain `go test` runs. Exits non-zero when any
# target failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime=${FUZZTIME:-10s}
status=0
while read -r pkg; do
	[[ -n $pkg ]] || continue
	dir=$(go list -f '{{.Dir}}' "$pkg")
	while read -r target; do
		printf '\n----- %s %s (%s)\n' "$pkg" "$target" "$fuzztime"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			status=1
			echo "FAILED: $pkg $target; the failing input is under $dir/testdata/fuzz/$target/: commit it as a seed" >&2
			git status --porcelain -- "$dir/testdata/fuzz" >&2 || true
		fi
	done < <(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u)
done < <(go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./... | while read -r p; do
	d=$(go list -f '{{.Dir}}' "$p")
	if grep -qs '^func Fuzz' "$d"/*_test.go; then echo "$p"; fi
done)
exit "$status"
