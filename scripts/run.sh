#!/usr/bin/env bash
# Starts the sample migration: legacy-monolith (8081), catalog-service (8082),
# inventory-service (8083) and the strangler proxy (8080, admin 9901) with routes.yaml.
# Databases live under .run/ (git-ignored) and survive restarts. Each line of output is
# prefixed with the program's name. Ctrl-C (or SIGTERM) stops them all.
#
# usage: scripts/run.sh [CONFIG] [BIN_DIR]
set -euo pipefail

config="${1:-routes.yaml}"
bin="${2:-./target/release}"
run_dir=".run"
mkdir -p "$run_dir"

pids=()

stop_all() {
    trap - INT TERM EXIT
    if ((${#pids[@]})); then
        echo "[run] stopping ${pids[*]}"
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

# start NAME COMMAND...: runs COMMAND with its output prefixed by NAME. The prefixing runs
# in a process substitution, so $! is the program itself and stopping it by PID works.
start() {
    local name="$1"
    shift
    "$@" > >(sed -u "s/^/[$name] /") 2>&1 &
    pids+=("$!")
}

start legacy    "$bin/legacy-monolith"   --listen 127.0.0.1:8081 --db "$run_dir/legacy.db" --config "$config"
start catalog   "$bin/catalog-service"   --listen 127.0.0.1:8082 --db "$run_dir/catalog.db"
start inventory "$bin/inventory-service" --listen 127.0.0.1:8083 --db "$run_dir/inventory.db"
start strangler "$bin/strangler" run --config "$config"

echo "[run] shop on http://127.0.0.1:8080 (admin http://127.0.0.1:9901); Ctrl-C stops everything"
# Any one of them exiting stops the rest.
wait -n "${pids[@]}" || true
echo "[run] a process exited; stopping the others"
