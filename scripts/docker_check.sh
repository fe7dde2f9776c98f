#!/usr/bin/env bash
# Build the Docker image (docker/Dockerfile) on a locally made Debian base and
# check it for real, inside the container as its non-root user:
#   mtrl-famo --help, the test suite, a short MT10 training into a mounted run
#   folder (files owned by the invoking user, not root), mtrl-famo eval, and
#   mtrl-famo video with software rendering (Mesa EGL, then OSMesa).
# Prints what it verified; exits non-zero on any failure. With no Docker engine
# it says so and exits 0. Not checked here: the default CUDA base image and GPU
# runs (they need a GPU machine and a registry that serves pytorch/pytorch).
#
#   scripts/docker_check.sh
#
# Settings (environment):
#   DOCKER_CHECK_BASE    image to build on instead of a debootstrapped Debian
#                        bookworm (debootstrap needs root), e.g. python:3.11-slim
#   DOCKER_CHECK_MIRROR  Debian mirror for debootstrap (default: the one apt uses, else deb.debian.org)
#   DOCKER_CHECK_TORCH   torch requirement pip installs in the image (default torch==2.13.0)
#   DOCKER_CHECK_WHEELS  folder of wheels pip may take torch from (default: pip's find-links, if a folder)
#   DOCKER_CHECK_CERT    CA bundle for pip in the build (default: pip's cert, else PIP_CERT, else none)
#   DOCKER_CHECK_TESTS   pytest arguments in the container (default: the whole suite); "skip" skips it
#   DOCKER_CHECK_TAG     image tag (default mtrl-famo:check)
#   DOCKER_CHECK_LOGS    folder to keep the logs in (build, pytest, train, eval, video; default: not kept)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${DOCKER_CHECK_TAG:-mtrl-famo:check}
TORCH_SPEC=${DOCKER_CHECK_TORCH:-torch==2.13.0}
TESTS=${DOCKER_CHECK_TESTS:-}
BASE_TAG=mtrl-famo-base:bookworm
WHEELS_TAG=mtrl-famo-wheels:check

say() { printf '[docker_check] %s\n' "$*"; }
VERIFIED=()
ok() { VERIFIED+=("$*"); say "ok: $*"; }
fail() { say "FAILED: $*" >&2; exit 1; }
trap 'say "FAILED: line $LINENO: $BASH_COMMAND" >&2' ERR
secs() { echo $(( $(date +%s) - $1 )); }

# --------------------------------------------------------------------------- #
# A Docker engine, and a client that builds with BuildKit
# --------------------------------------------------------------------------- #
if ! command -v docker >/dev/null 2>&1; then
    say "no docker command: no Docker engine here, nothing checked"
    exit 0
fi
if ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers (docker info failed): nothing checked"
    exit 0
fi
# The Dockerfile uses RUN --mount (BuildKit). Docker 23+ builds with buildx;
# older clients (e.g. Debian bookworm's docker.io 20.10) with DOCKER_BUILDKIT=1.
DOCKER=""
for client in docker /usr/bin/docker /usr/local/bin/docker; do
    command -v "$client" >/dev/null 2>&1 || continue
    if "$client" buildx version >/dev/null 2>&1; then DOCKER=$client; break; fi
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)
    if [[ $major =~ ^[0-9]+$ ]] && (( major < 23 )); then DOCKER=$client; break; fi
done
[ -n "$DOCKER" ] || fail "no Docker client here builds with BuildKit: install the buildx plugin (Debian: docker-buildx)"
export DOCKER_BUILDKIT=1
build() { "$DOCKER" build --progress=plain "$@"; }
say "engine $(docker version --format '{{.Server.Version}}'), building with $DOCKER ($("$DOCKER" version --format '{{.Client.Version}}'))"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/docker_check.XXXXXX")
cleanup() {
    if [ -n "${DOCKER_CHECK_LOGS:-}" ]; then
        mkdir -p "$DOCKER_CHECK_LOGS" && cp "$WORK"/*.log "$WORK"/*.txt "$DOCKER_CHECK_LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK" 2>/dev/null || true
}
trap cleanup EXIT

# --------------------------------------------------------------------------- #
# The base: an image named in DOCKER_CHECK_BASE, or Debian bookworm made here
# --------------------------------------------------------------------------- #
if [ -n "${DOCKER_CHECK_BASE:-}" ]; then
    BASE=$DOCKER_CHECK_BASE
    say "base: $BASE (DOCKER_CHECK_BASE)"
elif docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    BASE=$BASE_TAG
    say "base: $BASE, made by an earlier run (docker rmi $BASE_TAG to make it again)"
else
    BASE=$BASE_TAG
    [ "$(id -u)" = 0 ] || fail "debootstrap needs root: run as root, or set DOCKER_CHECK_BASE to a Debian/Ubuntu image"
    command -v debootstrap >/dev/null || fail "debootstrap is not installed (Debian: apt-get install debootstrap), or set DOCKER_CHECK_BASE"
    mirror=${DOCKER_CHECK_MIRROR:-}
    if [ -z "$mirror" ]; then
        mirror=$(grep -rhoE 'https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
                 | grep -v security | head -n1 | tr -d ' ' || true)
        mirror=${mirror:-http://deb.debian.org/debian}
    fi
    t0=$(date +%s)
    say "making the base: debootstrap --variant=minbase bookworm from $mirror"
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" > "$WORK/debootstrap.log" 2>&1 \
        || { tail -n 20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
    security=${mirror%/debian*}/debian-security
    printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
        "$mirror" "$mirror" "$security" > "$rootfs/etc/apt/sources.list"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . | docker import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    rm -rf "$rootfs"
    ok "base image $BASE made with debootstrap and docker import ($(secs "$t0") s)"
fi

# --------------------------------------------------------------------------- #
# What pip needs from this machine, passed in only for the build
# --------------------------------------------------------------------------- #
pip_setting() {  # first value of a pip option, from pip's config files and PIP_* variables
    python3 -m pip config list 2>/dev/null | sed -n "s/^.*\.$1='\([^' ]*\).*$/\1/p" | head -n1 || true
}
# Set but empty, DOCKER_CHECK_WHEELS and DOCKER_CHECK_CERT pass nothing in.
if [ -n "${DOCKER_CHECK_WHEELS+set}" ]; then WHEELS=$DOCKER_CHECK_WHEELS; else
    links=${PIP_FIND_LINKS:-}
    WHEELS=$(pip_setting find-links)
    WHEELS=${WHEELS:-${links%% *}}
fi
if [ -n "${DOCKER_CHECK_CERT+set}" ]; then CERT=$DOCKER_CHECK_CERT; else
    CERT=$(pip_setting cert)
    CERT=${CERT:-${PIP_CERT:-}}
fi
build_args=(--build-arg "BASE_IMAGE=$BASE" --build-arg "TORCH_SPEC=$TORCH_SPEC" --build-arg EXTRAS=test,envpool)
if [ -n "$WHEELS" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
    printf 'FROM scratch\nCOPY . /\n' | build -q -t "$WHEELS_TAG" -f - "$WHEELS" >/dev/null
    build_args+=(--build-arg "WHEELS_IMAGE=$WHEELS_TAG")
    say "wheels for pip: $WHEELS (as image $WHEELS_TAG)"
fi
if [ -n "$CERT" ] && [ -f "$CERT" ]; then
    build_args+=(--secret "id=pip_cert,src=$CERT")
    say "CA bundle for pip: $CERT (build secret pip_cert)"
fi
# The container user owns the mounted run folder: the invoking user, or UID 1000
# when that is root (the image refuses to run as root).
if [ "$(id -u)" = 0 ]; then RUN_UID=1000 RUN_GID=1000; else RUN_UID=$(id -u) RUN_GID=$(id -g); fi
build_args+=(--build-arg "UID=$RUN_UID" --build-arg "GID=$RUN_GID")

# --------------------------------------------------------------------------- #
# Build
# --------------------------------------------------------------------------- #
t0=$(date +%s)
say "building $TAG on $BASE with TORCH_SPEC=$TORCH_SPEC"
build -f docker/Dockerfile -t "$TAG" "${build_args[@]}" . > "$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "docker build"; }
size=$(docker image inspect "$TAG" --format '{{.Size}}')
ok "image $TAG built in $(secs "$t0") s, $(( size / 1000000 )) MB"

# The torch guard: a base without torch and no TORCH_SPEC must not build.
if build -f docker/Dockerfile -t mtrl-famo:check-notorch --build-arg "BASE_IMAGE=$BASE" \
        --build-arg TORCH_SPEC= . > "$WORK/notorch.log" 2>&1; then
    docker rmi mtrl-famo:check-notorch >/dev/null 2>&1 || true
    fail "the build without torch and without TORCH_SPEC succeeded"
fi
grep -q "the base image has no torch: set TORCH_SPEC" "$WORK/notorch.log" \
    || { tail -n 20 "$WORK/notorch.log" >&2; fail "the build without torch failed, but not at the torch check"; }
ok "a base without torch and an empty TORCH_SPEC fails the build, with the torch message"

# Nothing from this machine stays in the image.
docker history --no-trunc --format '{{.CreatedBy}}' "$TAG" > "$WORK/history.txt"
for secret_path in "$CERT" "$WHEELS"; do
    [ -n "$secret_path" ] || continue
    ! grep -qF "$secret_path" "$WORK/history.txt" || fail "the image history names $secret_path"
done
leftovers=$(docker run --rm --entrypoint bash "$TAG" -c \
    'find /run/secrets /tmp/wheels -mindepth 1 2>/dev/null; env | grep -E "^PIP_(CERT|CONFIG_FILE|FIND_LINKS)=" || true')
[ -z "$leftovers" ] || fail "build inputs left in the image: $leftovers"
ok "no CA bundle, pip config or wheel folder left in the image or its history"

# --------------------------------------------------------------------------- #
# In the container, as its non-root user
# --------------------------------------------------------------------------- #
run() { docker run --rm "$@"; }
who=$(run --entrypoint id "$TAG" -u)
[ "$who" = "$RUN_UID" ] && [ "$who" != 0 ] || fail "the container runs as uid $who, expected $RUN_UID"
ok "the container runs as uid $who (not root)"

run "$TAG" --help > "$WORK/help.txt" || fail "mtrl-famo --help"
grep -q '^usage: mtrl-famo' "$WORK/help.txt" || fail "mtrl-famo --help printed no usage"
versions=$(run --entrypoint python "$TAG" -c \
    'import sys, torch, mujoco, metaworld; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, mujoco {mujoco.__version__}")')
ok "mtrl-famo --help (entry point); $versions"

if [ "$TESTS" != skip ]; then
    t0=$(date +%s)
    # `times` adds the CPU time of pytest and its subprocesses: a measure that,
    # unlike the wall time, does not grow when other work shares the machine.
    # shellcheck disable=SC2016,SC2086  # $@ is expanded in the container; TESTS is a list of arguments
    # The tests run at this script's own niceness (nice -n 10 scripts/docker_check.sh).
    if ! run --entrypoint bash "$TAG" -c 'nice -n "$0" python -m pytest -q -rs -p no:cacheprovider "$@"; rc=$?; times; exit $rc' \
            "$(nice)" $TESTS > "$WORK/pytest.log" 2>&1; then
        tail -n 40 "$WORK/pytest.log" >&2
        fail "the test suite in the container"
    fi
    summary=$(grep -E '(passed|failed).* in [0-9.]+s' "$WORK/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//' || true)
    cpu=$(tail -n 1 "$WORK/pytest.log" | awk '{ n = split($0, t, " "); s = 0
        for (i = 1; i <= n; i++) { split(t[i], ms, "m"); s += ms[1] * 60 + ms[2] } printf "%d", s }')
    ok "test suite in the container (pytest ${TESTS:-, all of it}): $summary; $(secs "$t0") s wall, ${cpu} s CPU"
    grep '^SKIPPED' "$WORK/pytest.log" | sed 's/^/[docker_check]     /' || true
fi

RUNS="$WORK/runs"
mkdir -p "$RUNS"
[ "$(id -u)" != 0 ] || chown "$RUN_UID:$RUN_GID" "$RUNS"
mounted=(-v "$RUNS:/app/runs")
TINY=(device=cpu "agent.hidden_sizes=[32,32]" train.per_task_batch=8 train.warmup_steps=200
      train.buffer_size=20000 train.log_every=200 train.progress=false eval.episodes=1
      eval.final_episodes=1 benchmark.max_episode_steps=50 train.total_steps=1000 eval.every=500)
t0=$(date +%s)
run "${mounted[@]}" "$TAG" train benchmark=mt10 aggregator=famo "${TINY[@]}" run_dir=/app/runs/mt10 \
    > "$WORK/train.log" 2>&1 || { tail -n 30 "$WORK/train.log" >&2; fail "mtrl-famo train"; }
for f in config.yaml evals.jsonl results.json checkpoint.pt; do
    [ -s "$RUNS/mt10/$f" ] || fail "training wrote no $f into the mounted run folder"
done
ok "mtrl-famo train benchmark=mt10 aggregator=famo (1000 steps, tiny networks) into a mounted folder in $(secs "$t0") s: config.yaml, evals.jsonl, results.json, checkpoint.pt"

t0=$(date +%s)
run "${mounted[@]}" "$TAG" eval run_dir=/app/runs/mt10 eval.episodes=1 device=cpu > "$WORK/eval.log" 2>&1 \
    || { tail -n 30 "$WORK/eval.log" >&2; fail "mtrl-famo eval"; }
[ -s "$RUNS/mt10/eval.json" ] || fail "mtrl-famo eval wrote no eval.json"
ok "mtrl-famo eval (1 episode per task): eval.json in $(secs "$t0") s"

for gl in egl osmesa; do
    t0=$(date +%s)
    run "${mounted[@]}" -e "MUJOCO_GL=$gl" "$TAG" video run_dir=/app/runs/mt10 task=reach-v3 \
        width=160 height=160 "out=/app/runs/mt10/videos-$gl" > "$WORK/video-$gl.log" 2>&1 \
        || { tail -n 30 "$WORK/video-$gl.log" >&2; fail "mtrl-famo video with MUJOCO_GL=$gl"; }
    grep -q "with MUJOCO_GL=$gl" "$WORK/video-$gl.log" || fail "mtrl-famo video did not render with MUJOCO_GL=$gl"
    video=$(find "$RUNS/mt10/videos-$gl" -type f -name 'reach-v3-*' | head -n1)
    [ -n "$video" ] && [ -s "$video" ] || fail "mtrl-famo video (MUJOCO_GL=$gl) wrote no file"
    ok "mtrl-famo video with MUJOCO_GL=$gl (software rendering, no GPU): $(basename "$video"), $(stat -c %s "$video") bytes, in $(secs "$t0") s"
done

files=$(find "$RUNS" | wc -l)
strangers=$(find "$RUNS" \( ! -uid "$RUN_UID" -o ! -gid "$RUN_GID" \) | head -n 5)
[ -z "$strangers" ] || fail "files in the run folder not owned by $RUN_UID:$RUN_GID: $strangers"
if [ "$(id -u)" = 0 ]; then owner="uid $RUN_UID (the image's user; invoked as root)"; else owner="the invoking user (uid $RUN_UID)"; fi
ok "all $files files and folders written to the mounted run folder belong to $owner, none to root"

say "verified:"
for line in "${VERIFIED[@]}"; do say "  - $line"; done
say "not verified here: the default CUDA base (pytorch/pytorch) and runs on a GPU (--gpus all, EGL on the NVIDIA driver)"
