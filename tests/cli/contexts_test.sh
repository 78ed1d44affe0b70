#!/usr/bin/env bash
# `topiary` contexts against a real coordinator: `topiary config` writes and
# reads the config file (TOPIARY_CONFIG), --context / TOPIARY_CONTEXT /
# current-context pick the server, token file and TLS; flags beat the
# environment, which beats the context; bad files and unknown contexts are
# one readable line and exit 2. Usage: contexts_test.sh BIN_DIR
set -uo pipefail
bin=$1
topiary=$bin/topiary
tmp=$(mktemp -d)
pass=0; fail=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then pass=$((pass + 1)); else echo "FAIL: $name"; fail=$((fail + 1)); fi
}
expect_error() {  # expect_error NAME CODE PHRASE -- command...
  local name=$1 code=$2 phrase=$3; shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  check "$name: exit $code (got $rc: $(cat "$tmp/err"))" test "$rc" -eq "$code"
  check "$name: one line on stderr" test "$(wc -l <"$tmp/err")" -eq 1
  check "$name: names '$phrase' ($(cat "$tmp/err"))" grep -q -- "$phrase" "$tmp/err"
}

printf 'alice-token-0123456789 alice user\nbob-token-0123456789 bob user\n' >"$tmp/tokens"
printf 'alice-token-0123456789\n' >"$tmp/alice.token"
printf 'bob-token-0123456789\n' >"$tmp/bob.token"
mkdir -p "$tmp/root"
"$bin/topiary-coordinator" --listen 127.0.0.1:0 --metrics-address "" --state-dir "$tmp/state" \
  --storage-root "$tmp/root" --tokens "$tmp/tokens" --port-file "$tmp/ports" >"$tmp/coordinator.log" 2>&1 &
coordinator=$!
trap 'kill $coordinator 2>/dev/null; wait $coordinator 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do [ -s "$tmp/ports" ] && break; sleep 0.1; done
[ -s "$tmp/ports" ] || { echo "FAIL: the coordinator did not start:"; cat "$tmp/coordinator.log"; exit 1; }
server=127.0.0.1:$(head -1 "$tmp/ports")

export TOPIARY_CONFIG=$tmp/home/topiary/config.yaml
unset TOPIARY_SERVER TOPIARY_TOKEN TOPIARY_CONTEXT
expect_error "no config, no server" 3 "127.0.0.1:7070" -- "$topiary" list --timeout 2
"$topiary" config set-context alice --server "$server" --token-file "$tmp/alice.token" >/dev/null
"$topiary" config set-context bob --server "$server" --token-file "$tmp/bob.token" >/dev/null
"$topiary" config set-context elsewhere --server 127.0.0.1:9 --token-file "$tmp/alice.token" >/dev/null
check "the file is written" test -s "$TOPIARY_CONFIG"
check "the first context is current" test "$("$topiary" config current-context)" = alice
check "get-contexts marks the current one" grep -q '^\* *alice' <("$topiary" config get-contexts)

# alice (current) submits; bob does not see her job; alice does.
printf 'name: ctx\nteacher: {path: %s/root/m}\nstages:\n  - evaluate: {}\ndata:\n  eval: {path: %s/root/v.bin}\n' \
  "$tmp" "$tmp" >"$tmp/spec.yaml"
id=$("$topiary" submit "$tmp/spec.yaml")
check "submit through the current context" test "${id:0:4}" = job-
check "alice lists her job" grep -q "$id" <("$topiary" list)
check "--context bob does not see it" test -z "$("$topiary" list --context bob | grep "$id")"
check "TOPIARY_CONTEXT=bob does not see it" test -z "$(TOPIARY_CONTEXT=bob "$topiary" list | grep "$id")"
"$topiary" config use-context bob >/dev/null
check "use-context switches" test "$("$topiary" config current-context)" = bob
check "bob is current now" test -z "$("$topiary" list | grep "$id")"
check "--token-file beats the context's" grep -q "$id" <("$topiary" list --token-file "$tmp/alice.token")
check "TOPIARY_TOKEN beats the context's" grep -q "$id" <(TOPIARY_TOKEN=alice-token-0123456789 "$topiary" list)
# A context pointing nowhere: --server or TOPIARY_SERVER mends it.
expect_error "context elsewhere" 3 "" -- "$topiary" list --context elsewhere --timeout 2
check "--server beats the context's" grep -q "$id" <("$topiary" list --context elsewhere --server "$server")
check "TOPIARY_SERVER beats the context's" grep -q "$id" <(TOPIARY_SERVER=$server "$topiary" list --context elsewhere)

expect_error "unknown context" 2 "no context 'prod'" -- "$topiary" list --context prod
expect_error "use-context unknown" 2 "no context 'prod'" -- "$topiary" config use-context prod
"$topiary" config set-context broken --server "$server" --token-file "$tmp/missing.token" >/dev/null
expect_error "missing token file" 2 "missing.token" -- "$topiary" list --context broken
"$topiary" config delete-context broken
check "delete-context" test -z "$("$topiary" config get-contexts | grep broken)"
printf 'contexts:\n  - name: a\n    sever: x\n' >"$tmp/bad.yaml"
expect_error "unknown field in the file" 2 "sever: unknown field" -- env TOPIARY_CONFIG="$tmp/bad.yaml" "$topiary" list
printf 'contexts: [\n' >"$tmp/bad2.yaml"
expect_error "unparsable file" 2 "bad2.yaml" -- env TOPIARY_CONFIG="$tmp/bad2.yaml" "$topiary" list
head -c 2000000 /dev/zero | tr '\0' '#' >"$tmp/huge.yaml"
expect_error "oversized file" 2 "huge.yaml" -- env TOPIARY_CONFIG="$tmp/huge.yaml" "$topiary" list

echo "contexts: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
