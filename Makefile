# SPDX-License-Identifier: MIT OR Apache-2.0
#
# make test      install missing Debian packages, then run all tests and the README's examples
# make demo      install missing Debian packages, then play (or render) the demo
# make install   install missing Debian packages, build in release mode and install the plugin
#                where GStreamer finds it with no GST_PLUGIN_PATH (PREFIX and DESTDIR as usual)
# make uninstall remove what `make install` put there
# make inspect   build the plugin and show it in gst-inspect-1.0

CARGO ?= cargo
# Cargo.lock is committed: never let a build rewrite it.
CARGO_FLAGS ?= --locked
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
PLUGIN := libgstbgaudio.so

# Where the plugin goes. With PREFIX: GStreamer's plugin folder under that prefix, as a packager
# expects. Otherwise, as root: GStreamer's own plugin folder; as a user: the user's, which
# GStreamer also scans. DESTDIR is prepended to either, as usual.
ifdef PREFIX
PLUGINDIR ?= $(shell pkg-config --define-variable=prefix=$(PREFIX) --variable=pluginsdir gstreamer-1.0)
else ifeq ($(shell id -u),0)
PLUGINDIR ?= $(shell pkg-config --variable=pluginsdir gstreamer-1.0)
else
PLUGINDIR ?= $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/gstreamer-1.0/plugins
endif

.PHONY: all deps build test demo inspect install uninstall

all: build

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build $(CARGO_FLAGS)

# `cargo test`, then the README's examples headless (the Python ones where python3-gi is
# installed); ends with a one-line summary of what ran and passed (scripts/test.sh).
test: deps
	CARGO="$(CARGO)" CARGO_FLAGS="$(CARGO_FLAGS)" TARGET_DIR="$(TARGET_DIR)" bash scripts/test.sh

demo: deps
	$(CARGO) run $(CARGO_FLAGS) --release --example demo

# Builds in its own recipe rather than depending on `build`, so `make -j` cannot build before
# `deps` has installed the libraries. PLUGINDIR is worked out again here: pkg-config may only
# have been installed by `deps`.
install: deps
	$(CARGO) build $(CARGO_FLAGS) --release --lib
	@dir="$(or $(PLUGINDIR),$$(pkg-config --variable=pluginsdir gstreamer-1.0))"; \
	[ -n "$$dir" ] || { echo "make install: cannot tell GStreamer's plugin folder (pkg-config gstreamer-1.0)" >&2; exit 1; }; \
	install -d "$(DESTDIR)$$dir" && \
	install -m 0644 "$(TARGET_DIR)/release/$(PLUGIN)" "$(DESTDIR)$$dir/$(PLUGIN)" && \
	echo "Installed $(DESTDIR)$$dir/$(PLUGIN)"

uninstall:
	@dir="$(or $(PLUGINDIR),$$(pkg-config --variable=pluginsdir gstreamer-1.0))"; \
	if [ -e "$(DESTDIR)$$dir/$(PLUGIN)" ]; then \
		rm -f "$(DESTDIR)$$dir/$(PLUGIN)" && echo "Removed $(DESTDIR)$$dir/$(PLUGIN)"; \
	else \
		echo "Nothing to remove: $(DESTDIR)$$dir/$(PLUGIN) is not there"; \
	fi

inspect: deps
	$(CARGO) build $(CARGO_FLAGS)
	GST_PLUGIN_PATH=$(TARGET_DIR)/debug gst-inspect-1.0 bgaudiosrc
