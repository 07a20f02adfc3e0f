# SPDX-License-Identifier: MIT OR Apache-2.0
#
# make test    install missing Debian packages, then run all tests
# make demo    install missing Debian packages, then play (or render) the demo
# make inspect build the plugin and show it in gst-inspect-1.0

CARGO ?= cargo
# Cargo.lock is committed: never let a build rewrite it.
CARGO_FLAGS ?= --locked
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: all deps build test demo inspect

all: build

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build $(CARGO_FLAGS)

test: deps
	$(CARGO) test $(CARGO_FLAGS)

demo: deps
	$(CARGO) run $(CARGO_FLAGS) --release --example demo

# Builds in its own recipe rather than depending on `build`, so `make -j` cannot build before
# `deps` has installed the libraries.
inspect: deps
	$(CARGO) build $(CARGO_FLAGS)
	GST_PLUGIN_PATH=$(TARGET_DIR)/debug gst-inspect-1.0 bgaudiosrc
