#!/usr/bin/env bash
# A comparison run of the sample services: starts the legacy monolith and both extracted
# services on their own ports with fresh databases, imports the data, then replays the
# recorded requests in shadow/*.jsonl against legacy and each candidate with
# `strangler compare`, printing the report. Exits non-zero when a match rate is under
# MIN_MATCH (default 99), as a CI gate would.
#
# usage: scripts/shadow.sh [BIN_DIR]
set -euo pipefail

bin="${1:-./target/release}"
min_match="${MIN_MATCH:-99}"
work="$(mktemp -d)"
pids=()

stop_all() {
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap stop_all EXIT

# Ports away from `make run`'s, so both can run at once.
legacy=127.0.0.1:28081 catalog=127.0.0.1:28082 inventory=127.0.0.1:28083

"$bin/legacy-monolith" --listen "$legacy" --db "$work/legacy.db" >"$work/legacy.log" 2>&1 &
pids+=("$!")
"$bin/catalog-service" --listen "$catalog" --db "$work/catalog.db" >"$work/catalog.log" 2>&1 &
pids+=("$!")
"$bin/inventory-service" --listen "$inventory" --db "$work/inventory.db" >"$work/inventory.log" 2>&1 &
pids+=("$!")

wait_ready() {
    for _ in $(seq 1 100); do
        if curl -fsS "http://$1/healthz" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "shadow: $1 did not become ready; its log:" >&2
    cat "$work"/*.log >&2
    return 1
}
for addr in "$legacy" "$catalog" "$inventory"; do wait_ready "$addr"; done

echo "== importing the monolith's data through its public API"
"$bin/catalog-service" --db "$work/catalog.db" import --from "http://$legacy" | tail -1
"$bin/inventory-service" --db "$work/inventory.db" import --from "http://$legacy" | tail -1

status=0
for pair in "catalog:$catalog" "inventory:$inventory"; do
    name="${pair%%:*}" candidate="${pair#*:}"
    echo
    echo "== $name: legacy http://$legacy vs candidate http://$candidate (shadow/$name.jsonl)"
    "$bin/strangler" compare --requests "shadow/$name.jsonl" \
        --legacy "http://$legacy" --candidate "http://$candidate" \
        --min-match "$min_match" --noise || status=$?
done
exit "$status"
