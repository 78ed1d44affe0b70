#!/usr/bin/env bash
# The images, built and run here with podman (no registry): a Debian 12 base
# made by debootstrap (cached under the build directory) and imported; the
# coordinator and CPU worker images built from docker/Dockerfile with the
# binaries just built in place of its build stage; the coordinator image and
# a worker image started on loopback, configured the way the Kubernetes
# manifests configure them (TOPIARY_* variables), and a job submitted with the
# coordinator image's own `topiary` CLI runs to success.
# Usage: container_test.sh BUILD_DIR. Exit 77 (skipped) with the reason when
# podman cannot run containers here.
set -uo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$build/container
export CONTAINERS_CONF=$work/containers.conf
skip() { echo "SKIPPED: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v podman >/dev/null || skip "podman is not installed (CONTAINER_TESTS=1 scripts/setup installs podman, buildah, runc, debootstrap)"
command -v runc >/dev/null || skip "runc is not installed (podman's crun fails here on cgroups and open-files limits)"
[ "$(id -u)" = 0 ] || skip "podman runs as root here"
mkdir -p "$work"
# runc, and limits this machine can grant (crun fails here on cgroups and on raising the open-files limit).
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
podman info >/dev/null 2>&1 || skip "podman info fails: $(podman info 2>&1 | tail -1)"

base=localhost/topiary-base:bookworm
if ! podman image exists $base; then
  command -v debootstrap >/dev/null || skip "debootstrap is not installed"
  mirror=$(grep -rhoE 'https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -1)
  echo "container: debootstrap bookworm from ${mirror:-http://deb.debian.org/debian}"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1 ||
    fail "debootstrap: $(tail -3 "$work/debootstrap.log")"
  tar -C "$work/rootfs" -c . | podman import - $base >/dev/null || fail "podman import"
  rm -rf "$work/rootfs"
fi

# The build context: docker/, and the binaries in place of the Dockerfile's build stage.
ctx=$work/context
rm -rf "$ctx" && mkdir -p "$ctx/docker" "$ctx/out/bin" "$ctx/out/lib"
cp "$src"/docker/*.packages "$ctx/docker/"
for b in topiary topiary-compute topiary-coordinator topiary-worker topiary-rank; do cp "$build/bin/$b" "$ctx/out/bin/"; done
cp "$build/lib/libtopiary_spm_shim.so" "$ctx/out/lib/"
# The torch wheel's libraries, at the path the binaries were linked against.
site=$("$src/scripts/venv")/lib/python3.11/site-packages
mkdir -p "$ctx/out/wheel" && cp -a --parents "$site/torch/lib" "$site/nvidia" "$ctx/out/wheel/"
sed '/^# >>> binaries/,/^# <<< binaries/c\FROM scratch AS binaries\nCOPY out/ /out/' "$src/docker/Dockerfile" |
  sed '/^FROM ${DEBIAN} AS build$/,/^$/d' >"$ctx/Dockerfile"
grep -q 'FROM scratch AS binaries' "$ctx/Dockerfile" || fail "docker/Dockerfile lost its '# >>> binaries' markers"
for target in coordinator worker; do
  echo "container: building topiary-$target:test"
  podman build --quiet --build-arg DEBIAN=$base --target $target -t topiary-$target:test -f "$ctx/Dockerfile" "$ctx" \
    >"$work/build-$target.log" 2>&1 || fail "podman build $target: $(tail -5 "$work/build-$target.log")"
done
user=$(podman image inspect topiary-coordinator:test --format '{{.Config.User}}')
[ "$user" = 65532:65532 ] || fail "the coordinator image runs as '$user', not 65532:65532"
podman image inspect topiary-worker:test --format '{{index .Config.Labels "org.opencontainers.image.title"}}' |
  grep -qx topiary-worker || fail "the worker image has no OCI title label"

# Storage shared by both, state for the coordinator, as the volumes in deploy/.
run=$(mktemp -d)
cleanup() { podman rm -f topiary-test-coordinator topiary-test-worker >/dev/null 2>&1; rm -rf "$run"; }
trap cleanup EXIT
mkdir -p "$run/storage/models" "$run/storage/data" "$run/state" "$run/secrets"
cp -r "$src/models/kjv-llama-8m" "$run/storage/models/teacher"
cp "$build/kjv/kjv-train.bin" "$build/kjv/kjv-val.bin" "$run/storage/data/"
user_token=container-user-token-0123456789 worker_token=container-worker-token-0123456789
printf '%s alice user\n%s workers worker\n' $user_token $worker_token >"$run/secrets/tokens"
printf '%s\n' $worker_token >"$run/secrets/worker-token"
chown -R 65532:65532 "$run/storage" "$run/state" "$run/secrets"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

podman run -d --name topiary-test-coordinator --network host \
  -v "$run/state:/var/lib/topiary" -v "$run/storage:/storage" -v "$run/secrets:/etc/topiary/tokens:ro" \
  -e TOPIARY_COORDINATOR_LISTEN=127.0.0.1:$port -e TOPIARY_COORDINATOR_METRICS_ADDRESS= \
  -e TOPIARY_COORDINATOR_STATE_DIR=/var/lib/topiary/state -e TOPIARY_COORDINATOR_STORAGE_ROOT=/storage \
  -e TOPIARY_COORDINATOR_TOKENS=/etc/topiary/tokens/tokens topiary-coordinator:test >/dev/null ||
  fail "the coordinator container did not start"
podman run -d --name topiary-test-worker --network host \
  -v "$run/storage:/storage" -v "$run/secrets:/etc/topiary/worker-token:ro" \
  -e TOPIARY_WORKER_COORDINATOR=127.0.0.1:$port -e TOPIARY_WORKER_SLOTS=2 -e TOPIARY_WORKER_NAME=container-worker \
  -e TOPIARY_WORKER_TOKEN_FILE=/etc/topiary/worker-token/worker-token -e TOPIARY_WORKER_WORK_DIR=/tmp/work \
  -e TOPIARY_WORKER_STORAGE_ROOT=/storage topiary-worker:test >/dev/null || fail "the worker container did not start"

cat >"$run/storage/spec.yaml" <<'EOF'
name: container-test
teacher: {path: /storage/models/teacher}
data:
  calibration: {path: /storage/data/kjv-train.bin, format: u16, samples: 8, seq_len: 64}
  train: {path: /storage/data/kjv-train.bin, format: u16, seq_len: 64}
  eval: {path: /storage/data/kjv-val.bin, format: u16, seq_len: 64, samples: 8}
stages:
  - importance: {depth: [block_influence], batch: 2}
  - prune: {target: {hidden_size: 192, intermediate_size: 512, num_attention_heads: 6, num_key_value_heads: 3}}
  - distill: {tokens: 8K, lr: 2e-3, global_batch: 8}
  - evaluate: {}
  - export: {path: /storage/out/final, dtype: bf16}
resources: {ranks: 2}
EOF
chown 65532:65532 "$run/storage/spec.yaml"
# The submit Job's way: the coordinator image's CLI, its token from the environment.
podman run --rm --network host -v "$run/storage:/storage:ro" -e TOPIARY_TOKEN=$user_token \
  --entrypoint /usr/local/bin/topiary topiary-coordinator:test \
  submit /storage/spec.yaml --server 127.0.0.1:$port --request-id container-test --wait >"$work/submit.log" 2>&1
code=$?
if [ $code -ne 0 ]; then
  echo "== submit"; tail -20 "$work/submit.log"
  echo "== coordinator"; podman logs topiary-test-coordinator 2>&1 | tail -20
  echo "== worker"; podman logs topiary-test-worker 2>&1 | tail -30
  fail "the job through the images exited $code"
fi
[ -f "$run/storage/out/final/config.json" ] || fail "the job's export is not on the shared storage"
echo "container: images built on a debootstrap base; a job ran through the coordinator and worker images to success"
