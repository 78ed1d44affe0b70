#!/usr/bin/env bash
# The `topiary` front: it links no libtorch (so --help, version and the API
# commands never load it), it lists exactly the commands topiary-compute
# has, and it hands each compute command over with its arguments and exit
# code. Usage: front_test.sh BIN_DIR
set -euo pipefail
bin=$1
fail() { echo "FAIL: $*" >&2; exit 1; }

# Shared libraries of the front: nothing of libtorch, oneDNN or OpenBLAS.
if ldd "$bin/topiary" | grep -E 'libtorch|libc10|libdnnl|openblas|libgomp'; then
  fail "topiary links the compute libraries above"
fi
# The same at run time: the maps of a running front (an API command waiting on a dead server).
"$bin/topiary" watch job-x --server 127.0.0.1:9 --timeout 5 >/dev/null 2>&1 &
pid=$!
sleep 0.3
if [ -r "/proc/$pid/maps" ] && grep -E 'libtorch|libc10' "/proc/$pid/maps"; then
  kill $pid 2>/dev/null || true
  fail "a running API command mapped libtorch"
fi
kill $pid 2>/dev/null || true
wait $pid 2>/dev/null || true

commands() { "$1" --help | sed -n '/^Subcommands:/,$p' | awk 'NR > 1 && NF {print $1}'; }
diff <(commands "$bin/topiary") <(commands "$bin/topiary-compute") || fail "the front and topiary-compute list different commands"

# A compute command reaches topiary-compute with its arguments (its own --help included).
help=$("$bin/topiary" eval --help) || fail "topiary eval --help exited $?"
echo "$help" | grep -q -- "--model" || fail "topiary eval --help did not show eval's options: $help"
set +e
"$bin/topiary" eval >/dev/null 2>&1
code=$?
set -e
[ $code -eq 2 ] || fail "eval without its flags exited $code (2 expected)"

# inspect runs in the front (no libtorch) and says what topiary-compute says.
model=$(cd "$(dirname "$0")/../../models/kjv-llama-8m" && pwd)
[ "$(TOPIARY_COMPUTE=/nonexistent "$bin/topiary" inspect --model "$model" --json)" = \
  "$("$bin/topiary-compute" inspect --model "$model" --json)" ] || fail "inspect differs between front and compute"
set +e
"$bin/topiary" inspect --model /nonexistent/model >/dev/null 2>&1
code=$?
set -e
[ $code -ne 0 ] || fail "inspect of a missing model succeeded"
[ "$("$bin/topiary" version)" = "$("$bin/topiary-compute" version)" ] || fail "versions differ"

# No topiary-compute: one readable line, exit 2.
set +e
out=$(TOPIARY_COMPUTE=/nonexistent/topiary-compute "$bin/topiary" eval --help 2>&1)
code=$?
set -e
[ $code -eq 2 ] || fail "a missing topiary-compute exited $code"
[ "$(echo "$out" | wc -l)" -eq 1 ] || fail "expected one line, got: $out"
echo "$out" | grep -q "topiary-compute" || fail "the message does not name topiary-compute: $out"
echo "front: ok"
