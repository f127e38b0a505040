# Strangler: the two set-up commands are `make run` and `make test`.

CARGO ?= cargo
CONFIG ?= routes.yaml

.PHONY: run run-proxy build test check fmt lint migrate-catalog migrate-inventory cutover adapter status shadow

## run: build (release) and start the sample migration with the root routes.yaml: the legacy
## monolith (8081), catalog-service (8082), inventory-service (8083) and the proxy (8080,
## admin 9901); databases under .run/; Ctrl-C stops them all
run: build
	scripts/run.sh $(CONFIG) ./target/release

## run-proxy: only the proxy, with the root routes.yaml
run-proxy: build
	./target/release/strangler run --config $(CONFIG)

build:
	$(CARGO) build --release --workspace --bins

## test: unit, property and end-to-end tests (the end-to-end tests start the real binaries)
test:
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

## check: type-check everything and validate routes.yaml
check:
	$(CARGO) check --workspace --all-targets
	$(CARGO) run --quiet -p strangler -- check --config $(CONFIG)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The sample migration (see README, "The sample migration"). Run these while `make run` is up.
LEGACY_URL ?= http://127.0.0.1:8081
STRANGLER ?= ./target/release/strangler

## migrate-catalog: copy products from the monolith's API into catalog-service's database
migrate-catalog:
	./target/release/catalog-service --db .run/catalog.db import --from $(LEGACY_URL)

## migrate-inventory: copy stock levels from the monolith's API into inventory-service's database
migrate-inventory:
	./target/release/inventory-service --db .run/inventory.db import --from $(LEGACY_URL)

## cutover ROUTE=name MODE=legacy|shadow|canary|extracted [PERCENT=n]: move a route (edits routes.yaml)
cutover:
	@test -n "$(ROUTE)" && test -n "$(MODE)" || { echo "usage: make cutover ROUTE=name MODE=mode [PERCENT=n]" >&2; exit 2; }
	$(STRANGLER) set-mode --config $(CONFIG) $(ROUTE) $(MODE) $(if $(PERCENT),--percent $(PERCENT))

## adapter NAME=catalog|inventory TO=local|remote: switch the monolith's adapter (edits routes.yaml)
adapter:
	@test -n "$(NAME)" && test -n "$(TO)" || { echo "usage: make adapter NAME=name TO=local|remote" >&2; exit 2; }
	$(STRANGLER) set-adapter --config $(CONFIG) $(NAME) $(TO)

## status: each route's mode, share and request counts, from the admin API
status:
	$(STRANGLER) status

## shadow: a comparison run of the sample services: replays shadow/*.jsonl against the
## monolith and each extracted service (fresh databases, data imported) and prints the report;
## fails when a match rate is under MIN_MATCH (default 99)
shadow: build
	scripts/shadow.sh ./target/release

# Benchmarks (see README, "Benchmarks"). Not part of `make test`.
.PHONY: bench bench-quick bench-deps
BENCH_ARGS ?=

## bench-deps: install wrk, nginx (apt-get) and oha (cargo install) when missing
bench-deps:
	@scripts/bench-deps.sh

## bench: proxy benchmarks against the bare backend and NGINX (~10 min), then the criterion
## micro-benchmarks; table on stdout, JSON under target/bench/
bench: bench-deps
	$(CARGO) build --release -p strangler -p strangler-bench
	./target/release/strangler-bench $(BENCH_ARGS)
	$(CARGO) bench -p strangler

## bench-quick: a smoke run of the benchmark harness (1 round of 1 s; no criterion)
bench-quick: bench-deps
	$(CARGO) build --release -p strangler -p strangler-bench
	./target/release/strangler-bench --quick $(BENCH_ARGS)
