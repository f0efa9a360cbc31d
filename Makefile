# rktls build, install, test and demo.
#
#   make            build the library (release) into target/release
#   make install    PREFIX=/usr/local [DESTDIR=]: libraries, header, rktls.pc
#   make examples   build examples-c/ against a staged install, via pkg-config
#   make examples-san  the same under -fsanitize=address,undefined (build/examples-san)
#                   (and server_epoll_redis when hiredis is installed)
#   make demo       the README's first command: build everything, run a server and client
#   make demo-vm    the same demo inside the kTLS test VM (or: make demo ARGS=--vm)
#   make test       the README's second command: every test
#   make nginx      the nginx module (nginx/) against a staged install: build/nginx/
#   make fuzz       every fuzz target, FUZZ_SECONDS each (default 300)
#   make miri       Miri on the pure modules' tests (nightly; scripts/miri.sh)
#   make soak       server_epoll under thousands of mixed clients (SOAK_SECONDS, default 240),
#                   then offloaded in the kTLS VM (SOAK_VM_SECONDS, default 120)
#   make bench      benchmarks vs OpenSSL and rustls-ffi, nginx + rktls vs nginx + OpenSSL
#                   (writes BENCHMARKS.md; ~15 min)
#   make bench-quick the same harness with small counts (build/bench/quick/; < 3 min)

PREFIX     ?= /usr/local
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
CARGO      ?= cargo
CC         ?= cc
CFLAGS     ?= -O2 -g
WARN       := -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE

VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ABI        := $(shell sed -n 's/^abi-version = \([0-9]*\)/\1/p' Cargo.toml)
SONAME     := librktls.so.$(ABI)
REL        := target/release
STAGE      := $(CURDIR)/build/stage
EXAMPLES   := server_blocking server_epoll client
EX_BIN     := $(addprefix build/examples/,$(EXAMPLES))

.PHONY: all lib install stage examples examples-san nginx demo demo-vm test bench bench-quick clean header-check fuzz soak miri

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
	# The Redis session cache variant of server_epoll, when hiredis is there
	# (scripts/deps.sh installs it; tests/fleet.sh needs it).
	if pkg-config --exists hiredis; then \
	  PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig $(CC) $(CFLAGS) $(WARN) -pthread -DRKTLS_EXAMPLE_REDIS \
	    -o build/examples/server_epoll_redis examples-c/server_epoll.c \
	    $$(PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig pkg-config --cflags --libs rktls hiredis) \
	    -Wl,-rpath,$(STAGE)/lib || exit 1; \
	fi

# The same examples under AddressSanitizer and UndefinedBehaviorSanitizer.
SAN_FLAGS  := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
examples-san: stage
	@mkdir -p build/examples-san
	for e in $(EXAMPLES); do \
	  PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig $(CC) $(SAN_FLAGS) $(WARN) -pthread \
	    -o build/examples-san/$$e examples-c/$$e.c \
	    $$(PKG_CONFIG_PATH=$(STAGE)/lib/pkgconfig pkg-config --cflags --libs rktls) \
	    -Wl,-rpath,$(STAGE)/lib || exit 1; \
	done

# The nginx module, built with Debian's nginx-dev against the staged install.
nginx: stage
	nginx/build.sh $(STAGE)

demo:
	scripts/demo.sh $(ARGS)

demo-vm:
	scripts/demo.sh --vm

test:
	scripts/test.sh

bench:
	scripts/bench.sh

FUZZ_SECONDS ?= 300
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

miri:
	scripts/miri.sh

SOAK_SECONDS ?= 240
SOAK_VM_SECONDS ?= 120
soak: examples
	scripts/gen-certs.sh build/certs
	env BIN=build/examples CERTS=build/certs SOAK_SECONDS=$(SOAK_SECONDS) tests/soak.sh
	env VM_KERNEL=rekey SOAK_SECONDS=$(SOAK_VM_SECONDS) tests/vm/soak.sh

bench-quick:
	scripts/bench.sh --quick

header-check: lib
	git diff --exit-code -- include/rktls.h || \
	  { echo "include/rktls.h is out of date: commit the regenerated header"; exit 1; }

clean:
	$(CARGO) clean
	rm -rf build
