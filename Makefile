# Strangler: the two set-up commands are `make run` and `make test`.

CARGO ?= cargo
CONFIG ?= routes.yaml

.PHONY: run build test check fmt lint

## run: build (release) and start the proxy with the root routes.yaml
run: build
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
