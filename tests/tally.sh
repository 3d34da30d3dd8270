#!/usr/bin/env bash
# Prints how many tests of a `make` step ran each real tool, from the tally the testkit writes
# (`modgate_testkit::tools::tally`: one line per test binary and test). Under CI a step that is
# meant to run the real `go` and ran it in no test fails: the tests would have been skipped.
set -euo pipefail
dir=$1 step=$2
go=0
[ -f "$dir/go" ] && go=$(sort -u "$dir/go" | wc -l)
echo "$step: $go tests ran the real go command"
if [ "$go" -eq 0 ] && [ -n "${CI:-}" ] && [ "${CI}" != false ] && [ "${CI}" != 0 ]; then
  echo "$step: no test ran the real go command under CI: they were skipped or the tally is broken" >&2
  exit 1
fi
