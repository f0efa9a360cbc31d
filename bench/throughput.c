/*
 * Userspace record-layer throughput: a client and a server connection in
 * buffer mode, in one thread, move TOTAL bytes client -> server in 16 KiB
 * writes, for each TLS 1.3 suite and TLS 1.2 AES-128-GCM. Prints MB/s and
 * each case's ratio to TLS 1.3 AES-128-GCM measured in the same run
 * (machines here are noisy: compare ratios, not absolute figures).
 *
 *   throughput CERTDIR [MiB]
 */
#include <rktls.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pump(rktls_connection *from, rktls_connection *to, uint8_t *wire, size_t cap)
{
    size_t n, used;
    while (rktls_connection_take_tls(from, wire, cap, &n) == RKTLS_OK && n)
        for (size_t off = 0; off < n; off += used)
            if (rktls_connection_feed_tls(to, wire + off, n - off, &used) != RKTLS_OK || !used) {
                fprintf(stderr, "feed failed\n");
                exit(1);
            }
}

static double run(const char *dir, uint16_t version, uint16_t suite, size_t total)
{
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    rktls_server_config_builder *sb;
    const rktls_server_config *scfg;
    rktls_server_config_builder_new(&sb);
    rktls_server_config_builder_add_cert_key_files(sb, cert, key);
    rktls_server_config_builder_set_versions(sb, &version, 1);
    rktls_server_config_builder_set_cipher_suites(sb, &suite, 1);
    rktls_server_config_builder_build(sb, &scfg);
    rktls_client_config_builder *cb;
    const rktls_client_config *ccfg;
    rktls_client_config_builder_new(&cb);
    rktls_client_config_builder_add_roots_file(cb, ca);
    rktls_client_config_builder_build(cb, &ccfg);
    rktls_connection *c, *s;
    rktls_client_connection_new(ccfg, "localhost", &c);
    rktls_server_connection_new(scfg, &s);
    static uint8_t wire[1 << 17], chunk[16384], out[1 << 16];
    for (int i = 0; i < 10; i++) {
        rktls_connection_handshake(c);
        pump(c, s, wire, sizeof wire);
        rktls_connection_handshake(s);
        pump(s, c, wire, sizeof wire);
    }
    if (rktls_connection_cipher_suite(c) != suite) {
        fprintf(stderr, "suite %04x not negotiated\n", suite);
        exit(1);
    }
    memset(chunk, 0xab, sizeof chunk);
    double t0 = now();
    size_t got = 0;
    for (size_t sent = 0; sent < total;) {
        size_t n = 0;
        if (rktls_connection_write(c, chunk, sizeof chunk, &n) != RKTLS_OK)
            exit(1);
        sent += n;
        pump(c, s, wire, sizeof wire);
        while (rktls_connection_read(s, out, sizeof out, &n) == RKTLS_OK)
            got += n;
    }
    double secs = now() - t0;
    if (got != total) {
        fprintf(stderr, "received %zu of %zu\n", got, total);
        exit(1);
    }
    rktls_connection_free(c);
    rktls_connection_free(s);
    rktls_server_config_free(scfg);
    rktls_client_config_free(ccfg);
    return (double)total / secs / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: throughput CERTDIR [MiB]\n");
        return 2;
    }
    size_t total = (size_t)(argc > 2 ? atoi(argv[2]) : 256) << 20;
    struct {
        const char *name;
        uint16_t version, suite;
    } cases[] = {{"TLS1.3 AES-128-GCM", 0x0304, 0x1301},
                 {"TLS1.3 AES-256-GCM", 0x0304, 0x1302},
                 {"TLS1.3 CHACHA20-POLY1305", 0x0304, 0x1303},
                 {"TLS1.2 ECDHE-ECDSA AES-128-GCM", 0x0303, 0xc02b}};
    printf("| case | MB/s | ratio to TLS1.3 AES-128-GCM |\n|---|---|---|\n");
    double base = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double mbs = run(argv[1], cases[i].version, cases[i].suite, total);
        if (i == 0)
            base = mbs;
        printf("| %s | %.0f | %.2f |\n", cases[i].name, mbs, mbs / base);
    }
    return 0;
}
