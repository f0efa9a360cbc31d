/*
 * hold: the smallest TLS server that holds connections, to measure the
 * resident memory a library keeps per idle established connection. Built
 * once per library from this one file, so the program around the library is
 * the same: -DHOLD_RKTLS, -DHOLD_OPENSSL or -DHOLD_RUSTLS (rustls-ffi).
 *
 *   hold CERT KEY WARM N [--ktls]     (--ktls: rktls with kTLS required)
 *
 * Prints "READY port=P", then accepts WARM + N connections one after the
 * other on 127.0.0.1, completes each TLS handshake (blocking socket) and keeps
 * the connection. VmRSS is read after the first WARM are held and again after
 * all WARM + N; it prints
 *   "hold rss_before=B rss_after=A per_conn=(A-B)/N offloaded=K"
 * (K: connections whose TX and RX went to the kernel, rktls only) and exits.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#if defined(HOLD_RKTLS)
#include <rktls.h>
#elif defined(HOLD_OPENSSL)
#include <openssl/err.h>
#include <openssl/ssl.h>
#elif defined(HOLD_RUSTLS)
#include "rustls.h"
#else
#error "build with -DHOLD_RKTLS, -DHOLD_OPENSSL or -DHOLD_RUSTLS"
#endif

static void die(const char *what)
{
    fprintf(stderr, "hold: %s\n", what);
    exit(1);
}

static long rss_bytes(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
        die("cannot read /proc/self/statm");
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

/* ---- one backend per library: setup(), then hold_one(fd) per connection -- */

#if defined(HOLD_RKTLS)
static const rktls_server_config *cfg;

static void setup(const char *cert, const char *key, int ktls)
{
    rktls_server_config_builder *b = NULL;
    if (rktls_server_config_builder_new(&b) != RKTLS_OK ||
        rktls_server_config_builder_add_cert_key_files(b, cert, key) != RKTLS_OK ||
        /* rustls-ffi's server keeps rustls' default of 256 sessions; rktls
         * defaults to 1024. The same size here, so the figure is each
         * library's per-connection memory, not a cache still filling up. */
        rktls_server_config_builder_set_session_cache_size(b, 256) != RKTLS_OK ||
        rktls_server_config_builder_set_ktls(b, ktls ? RKTLS_KTLS_REQUIRE : RKTLS_KTLS_OFF) !=
            RKTLS_OK ||
        rktls_server_config_builder_build(b, &cfg) != RKTLS_OK)
        die("rktls config");
}

/* Returns 1 if the record layer went to the kernel. */
static int hold_one(int fd)
{
    rktls_connection *c = NULL;
    if (rktls_server_connection_new(cfg, &c) != RKTLS_OK || rktls_connection_set_fd(c, fd) != RKTLS_OK ||
        rktls_connection_handshake(c) != RKTLS_OK)
        die("rktls handshake");
    return rktls_connection_ktls_tx(c) && rktls_connection_ktls_rx(c);
}

#elif defined(HOLD_OPENSSL)
static SSL_CTX *ctx;

static void setup(const char *cert, const char *key, int ktls)
{
    (void)ktls;
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("openssl config");
}

static int hold_one(int fd)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1)
        die("openssl handshake");
    return 0;
}

#else /* rustls-ffi */
static const rustls_server_config *cfg;

static rustls_io_result read_cb(void *ud, uint8_t *buf, size_t n, size_t *out)
{
    ssize_t r = read((int)(intptr_t)ud, buf, n);
    if (r < 0)
        return 5; /* EIO */
    *out = (size_t)r;
    return 0;
}

static rustls_io_result write_cb(void *ud, const uint8_t *buf, size_t n, size_t *out)
{
    ssize_t r = write((int)(intptr_t)ud, buf, n);
    if (r < 0)
        return 5;
    *out = (size_t)r;
    return 0;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    static char buf[2][16384];
    static int which;
    char *b = buf[which++ % 2];
    if (!f)
        die(path);
    *len = fread(b, 1, sizeof buf[0], f);
    fclose(f);
    return b;
}

static void setup(const char *cert, const char *key, int ktls)
{
    (void)ktls;
    size_t cl, kl;
    const char *c = slurp(cert, &cl), *k = slurp(key, &kl);
    const rustls_certified_key *ck = NULL;
    rustls_server_config_builder *b = rustls_server_config_builder_new();
    if (rustls_certified_key_build((const uint8_t *)c, cl, (const uint8_t *)k, kl, &ck) !=
            RUSTLS_RESULT_OK ||
        rustls_server_config_builder_set_certified_keys(b, &ck, 1) != RUSTLS_RESULT_OK ||
        rustls_server_config_builder_build(b, &cfg) != RUSTLS_RESULT_OK)
        die("rustls-ffi config");
}

static int hold_one(int fd)
{
    rustls_connection *c = NULL;
    size_t n;
    void *ud = (void *)(intptr_t)fd;
    if (rustls_server_connection_new(cfg, &c) != RUSTLS_RESULT_OK)
        die("rustls-ffi connection");
    while (rustls_connection_is_handshaking(c) || rustls_connection_wants_write(c)) {
        if (rustls_connection_wants_write(c)) {
            if (rustls_connection_write_tls(c, write_cb, ud, &n) != 0)
                die("rustls-ffi write");
        } else {
            if (rustls_connection_read_tls(c, read_cb, ud, &n) != 0 || n == 0)
                die("rustls-ffi read");
            if (rustls_connection_process_new_packets(c) != RUSTLS_RESULT_OK)
                die("rustls-ffi handshake");
        }
    }
    return 0;
}
#endif

int main(int argc, char **argv)
{
    if (argc < 5)
        die("usage: hold CERT KEY WARM N [--ktls]");
    long warm = atol(argv[3]), n = atol(argv[4]);
    setup(argv[1], argv[2], argc > 5 && !strcmp(argv[5], "--ktls"));
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 1024) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) != 0)
        die("listen");
    printf("READY port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    long before = 0, offloaded = 0;
    for (long i = 0; i < warm + n; i++) {
        if (i == warm)
            before = rss_bytes();
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            die("accept");
        offloaded += hold_one(fd);
    }
    long after = rss_bytes();
    printf("hold rss_before=%ld rss_after=%ld per_conn=%ld offloaded=%ld\n", before, after,
           (after - before) / n, offloaded);
    return 0;
}
