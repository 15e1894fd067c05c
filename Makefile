# veea-hmd: the entry point. `make demo` runs the daemon, `make test` runs every check.
SHELL := /bin/sh
NPM_BIN := node_modules/.bin

.PHONY: all setup build typecheck lint test test-unit test-e2e demo run bench soak clean

all: build

setup:
	@./scripts/setup.sh

build: setup
	@$(NPM_BIN)/tsc -p tsconfig.build.json && chmod +x dist/main.js

typecheck: setup
	@$(NPM_BIN)/tsc -p tsconfig.json --noEmit

lint: setup
	@$(NPM_BIN)/eslint .

# Everything CI runs: build, type-check, lint, then unit, e2e and reliability tests.
test: build typecheck lint
	@$(NPM_BIN)/vitest run

test-unit: build
	@$(NPM_BIN)/vitest run test/unit

test-e2e: build
	@$(NPM_BIN)/vitest run test/e2e

# Runs the daemon for real: on the system bus when one answers, otherwise on a private bus with
# a demo container and fixture devices flowing.
demo run: build
	@node dist/main.js demo $(if $(DEMO_SECONDS),--seconds $(DEMO_SECONDS))

bench: build
	@$(NPM_BIN)/tsx bench/run.ts

# An hour of random plug/unplug with containers coming and going (not in CI): MINUTES=N to change.
soak: build
	@$(NPM_BIN)/tsx test/soak/soak.ts --minutes $(or $(MINUTES),60)

clean:
	rm -rf dist coverage build

-include mk/*.mk
