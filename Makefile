# rktls build, install, test and demo.
#
#   make            build the library (release) into target/release
#   make install    PREFIX=/usr/local [DESTDIR=]: libraries, header, rktls.pc
#   make examples   build examples-c/ against a staged install, via pkg-config
#   make demo       the README's first command: build everything, run a server and client
#   make demo-vm    the same demo inside the kTLS test VM (or: make demo ARGS=--vm)
#   make test       the README's second command: every test
#   make bench      benchmarks vs OpenSSL and rustls-ffi (writes BENCHMARKS.md; ~15 min)
#   make bench-quick the same harness with small counts (build/bench/quick/; < 3 min)

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO      ?= cargo
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE

VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ABI        := 0
SONAME     := librktls.so.$(ABI)
REL        := target/release
STAGE      := $(CURDIR)/build/stage
EXAMPLES   := server_blocking server_epoll client
EX_BIN     := $(addprefix build/examples/,$(EXAMPLES))

.PHONY: all lib install examples demo demo-vm test bench bench-quick clean header-check

all: lib

lib:
	$(CARGO) build --release

# Static linking needs the libraries Rust's std uses; ask rustc once.
build/native-static-libs: Cargo.toml
	@mkdir -p build
	$(CARGO) rustc --release --lib --crate-type staticlib -- --print native-static-libs 2>&1 \
	  | sed -n 's/.*native-static-libs: //p' | tail -1 > $@

install: lib build/native-static-libs
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 644 include/rktls.h $(DESTDIR)$(INCLUDEDIR)/rktls.h
	install -m 644 $(REL)/librktls.a $(DESTDIR)$(LIBDIR)/librktls.a
	install -m 755 $(REL)/librktls.so $(DESTDIR)$(LIBDIR)/librktls.so.$(VERSION)
	ln -sf librktls.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/librktls.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e "s|@PRIVATE@|$$(cat build/native-static-libs)|" \
	    rktls.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/rktls.pc

stage:
	$(MAKE) install PREFIX=$(STAGE)

# The examples are built the way a user builds them: pkg-config on an install.
examples: stage
	@mkdir -p build/examples
	for e in $(EXAMPLES); do \
	  PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig $(CC) $(CFLAGS) $(WARN) -pthread \
	    -o build/examples/$$e examples-c/$$e.c \
	    $$(PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig pkg-config --cflags --libs rktls) \
	    -Wl,-rpath,$(STAGE)/lib || exit 1; \
	done

demo:
	scripts/demo.sh $(ARGS)

demo-vm:
	scripts/demo.sh --vm

test:
	scripts/test.sh

bench:
	scripts/bench.sh

bench-quick:
	scripts/bench.sh --quick

header-check: lib
	git diff --exit-code -- include/rktls.h || \
	  { echo "include/rktls.h is out of date: commit the regenerated header"; exit 1; }

clean:
	$(CARGO) clean
	rm -rf build
