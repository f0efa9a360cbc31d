/*
 * C test of the configuration API: every supported key type handshakes, SNI
 * picks between certificates, and each kind of bad input gets its own code
 * and a message naming the problem, leaving the builder usable.
 * Cipher suites are found by their IANA, rustls and OpenSSL names, and a
 * suite chosen by name is the one negotiated.
 *
 *   config_test CERTDIR
 */
#include <rktls.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;

static const char *path(const char *name)
{
    static char buf[8][512];
    static int i;
    i = (i + 1) % 8;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
}

static const char *last_error(void)
{
    static char msg[512];
    size_t n;
    msg[0] = 0;
    rktls_last_error_message(msg, sizeof msg, &n);
    return msg;
}

static int move(rktls_connection *from, rktls_connection *to)
{
    uint8_t wire[8192];
    size_t n = 0, used = 0;
    while (rktls_connection_take_tls(from, wire, sizeof wire, &n) == RKTLS_OK && n > 0)
        for (size_t off = 0; off < n; off += used)
            if (rktls_connection_feed_tls(to, wire + off, n - off, &used) != RKTLS_OK || !used)
                return -1;
    return 0;
}

/* Handshake in buffer mode; returns the server's and client's final results. */
static void handshake(const rktls_server_config *s_cfg, const rktls_client_config *c_cfg,
                      const char *sni, rktls_result *rs, rktls_result *rc, char *got_sni,
                      uint16_t *suite)
{
    rktls_connection *s = NULL, *c = NULL;
    rktls_server_connection_new(s_cfg, &s);
    rktls_client_connection_new(c_cfg, sni, &c);
    for (int i = 0; i < 10; i++) {
        *rc = rktls_connection_handshake(c);
        move(c, s);
        *rs = rktls_connection_handshake(s);
        move(s, c);
        if (*rs != RKTLS_WANT_READ && *rs != RKTLS_WANT_WRITE && *rc != RKTLS_WANT_READ &&
            *rc != RKTLS_WANT_WRITE)
            break;
    }
    size_t n;
    if (got_sni)
        rktls_connection_server_name(s, got_sni, 256, &n);
    if (suite)
        *suite = rktls_connection_cipher_suite(c);
    rktls_connection_free(s);
    rktls_connection_free(c);
}

static const rktls_client_config *client_cfg(void)
{
    rktls_client_config_builder *b = NULL;
    const rktls_client_config *cfg = NULL;
    rktls_client_config_builder_new(&b);
    rktls_client_config_builder_add_roots_file(b, path("ca.pem"));
    rktls_client_config_builder_build(b, &cfg);
    return cfg;
}

static void key_types(void)
{
    const char *kinds[][2] = {{"server.pem", "server.key"}, /* ECDSA P-256 */
                              {"other.pem", "other.key"},   /* ECDSA P-384 */
                              {"rsa.pem", "rsa.key"},
                              {"ed25519.pem", "ed25519.key"}};
    const rktls_client_config *ccfg = client_cfg();
    for (size_t i = 0; i < 4; i++) {
        rktls_server_config_builder *b = NULL;
        const rktls_server_config *cfg = NULL;
        rktls_server_config_builder_new(&b);
        rktls_result r =
            rktls_server_config_builder_add_cert_key_files(b, path(kinds[i][0]), path(kinds[i][1]));
        EXPECT(r == RKTLS_OK, "%s: %s: %s", kinds[i][0], rktls_result_str(r), last_error());
        EXPECT(rktls_server_config_builder_build(b, &cfg) == RKTLS_OK, "build %s", kinds[i][0]);
        rktls_result rs, rc;
        const char *name = i == 1 ? "other.test" : "localhost";
        handshake(cfg, ccfg, name, &rs, &rc, NULL, NULL);
        EXPECT(rs == RKTLS_OK && rc == RKTLS_OK, "%s handshake: server %s, client %s",
               kinds[i][0], rktls_result_str(rs), rktls_result_str(rc));
        rktls_server_config_free(cfg);
    }
    rktls_client_config_free(ccfg);
}

static void sni_choice(void)
{
    rktls_server_config_builder *b = NULL;
    const rktls_server_config *cfg = NULL;
    rktls_server_config_builder_new(&b);
    rktls_server_config_builder_add_cert_key_files(b, path("server.pem"), path("server.key"));
    rktls_server_config_builder_add_cert_key_files(b, path("other.pem"), path("other.key"));
    rktls_server_config_builder_build(b, &cfg);
    const rktls_client_config *ccfg = client_cfg();
    const char *names[] = {"localhost", "other.test", "example.com"};
    for (int i = 0; i < 3; i++) {
        rktls_result rs, rc;
        char got[256] = "";
        handshake(cfg, ccfg, names[i], &rs, &rc, got, NULL);
        EXPECT(rs == RKTLS_OK && rc == RKTLS_OK, "SNI %s: %s / %s", names[i],
               rktls_result_str(rs), rktls_result_str(rc));
        EXPECT(strcmp(got, names[i]) == 0, "server saw SNI '%s', want '%s'", got, names[i]);
    }
    rktls_server_config_free(cfg);
    rktls_client_config_free(ccfg);
}

static void bad_input(void)
{
    rktls_server_config_builder *b = NULL;
    rktls_server_config_builder_new(&b);
    rktls_result r;

    r = rktls_server_config_builder_add_cert_key_files(b, "/nonexistent.pem", path("server.key"));
    EXPECT(r == RKTLS_ERR_CONFIG_FILE, "unreadable file: %s", rktls_result_str(r));
    EXPECT(strstr(last_error(), "/nonexistent.pem") != NULL, "message names the file: %s",
           last_error());

    r = rktls_server_config_builder_add_cert_key_files(b, path("server.pem"), path("server.pem"));
    EXPECT(r == RKTLS_ERR_CONFIG_PEM, "PEM without key: %s", rktls_result_str(r));
    EXPECT(strstr(last_error(), "no PRIVATE KEY") != NULL, "message: %s", last_error());

    r = rktls_server_config_builder_add_cert_key_files(b, path("server.pem"), path("other.key"));
    EXPECT(r == RKTLS_ERR_CONFIG_KEY_MISMATCH, "mismatched key: %s", rktls_result_str(r));

    r = rktls_server_config_builder_set_alpn(b, (const uint8_t *)"h2", 2);
    EXPECT(r == RKTLS_ERR_CONFIG_ALPN, "ALPN not in wire format: %s", rktls_result_str(r));

    r = rktls_server_config_builder_set_versions(b, NULL, 0);
    EXPECT(r == RKTLS_ERR_CONFIG_VERSIONS, "empty versions: %s", rktls_result_str(r));
    uint16_t tls11 = 0x0302;
    r = rktls_server_config_builder_set_versions(b, &tls11, 1);
    EXPECT(r == RKTLS_ERR_CONFIG_VERSIONS, "TLS 1.1: %s", rktls_result_str(r));

    uint16_t rc4 = 0x0005;
    r = rktls_server_config_builder_set_cipher_suites(b, &rc4, 1);
    EXPECT(r == RKTLS_ERR_CONFIG_CIPHER_SUITES, "unknown suite: %s", rktls_result_str(r));

    r = rktls_server_config_builder_add_cert_key_files(b, NULL, path("server.key"));
    EXPECT(r == RKTLS_ERR_NULL_ARGUMENT, "NULL path: %s", rktls_result_str(r));
    EXPECT(rktls_result_category(r) == RKTLS_CATEGORY_USAGE, "NULL is a usage error");

    /* None of the failures half-built anything: the builder has no key yet. */
    const rktls_server_config *cfg = NULL;
    r = rktls_server_config_builder_build(b, &cfg);
    EXPECT(r == RKTLS_ERR_CONFIG_INCOMPLETE && cfg == NULL, "incomplete build: %s",
           rktls_result_str(r));

    rktls_client_config_builder *cb = NULL;
    rktls_client_config_builder_new(&cb);
    r = rktls_client_config_builder_add_roots_file(cb, path("server.key"));
    EXPECT(r == RKTLS_ERR_CONFIG_PEM, "key file as CA bundle: %s", rktls_result_str(r));
    const rktls_client_config *ccfg = NULL;
    r = rktls_client_config_builder_build(cb, &ccfg);
    EXPECT(r == RKTLS_ERR_CONFIG_INCOMPLETE, "client without roots: %s", rktls_result_str(r));

    rktls_connection *conn = NULL;
    ccfg = client_cfg();
    r = rktls_client_connection_new(ccfg, "not a host name", &conn);
    EXPECT(r == RKTLS_ERR_CONFIG_SERVER_NAME && conn == NULL, "bad server name: %s",
           rktls_result_str(r));
    rktls_client_config_free(ccfg);

    /* Frees accept NULL. */
    rktls_server_config_builder_free(NULL);
    rktls_client_config_free(NULL);
    rktls_connection_free(NULL);
}

static void suite_names(void)
{
    static const struct {
        const char *name;
        uint16_t id;
    } known[] = {
        {"TLS_AES_128_GCM_SHA256", 0x1301},
        {"TLS13_AES_128_GCM_SHA256", 0x1301},
        {"TLS_AES_256_GCM_SHA384", 0x1302},
        {"TLS13_AES_256_GCM_SHA384", 0x1302},
        {"TLS_CHACHA20_POLY1305_SHA256", 0x1303},
        {"TLS13_CHACHA20_POLY1305_SHA256", 0x1303},
        {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", 0xc02b},
        {"ECDHE-ECDSA-AES128-GCM-SHA256", 0xc02b},
        {"ecdhe-ecdsa-aes128-gcm-sha256", 0xc02b},
        {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xc02c},
        {"ECDHE-ECDSA-AES256-GCM-SHA384", 0xc02c},
        {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca9},
        {"ECDHE-ECDSA-CHACHA20-POLY1305", 0xcca9},
        {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", 0xc02f},
        {"ECDHE-RSA-AES128-GCM-SHA256", 0xc02f},
        {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xc030},
        {"ECDHE-RSA-AES256-GCM-SHA384", 0xc030},
        {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", 0xcca8},
        {"ECDHE-RSA-CHACHA20-POLY1305", 0xcca8},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        uint16_t id = 0;
        rktls_result r = rktls_cipher_suite_from_name(known[i].name, &id);
        EXPECT(r == RKTLS_OK && id == known[i].id, "%s: %s, 0x%04x, want 0x%04x", known[i].name,
               rktls_result_str(r), id, known[i].id);
        /* The IANA name comes back for the id whatever name found it. */
        const char *iana = rktls_cipher_suite_name(id);
        uint16_t again = 0;
        EXPECT(strncmp(iana, "TLS_", 4) == 0 &&
                   rktls_cipher_suite_from_name(iana, &again) == RKTLS_OK && again == id,
               "0x%04x named %s", id, iana);
    }

    const char *unknown[] = {"\xff\xfe", "",    "unknown", "TLS_RSA_WITH_AES_128_GCM_SHA256",
                             "HIGH",     "ALL", "ECDHE-RSA-AES128-GCM-SHA256:HIGH",
                             "TLS_AES_128_GCM_SHA256 ", "RC4-SHA"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        uint16_t id = 0xbeef;
        rktls_result r = rktls_cipher_suite_from_name(unknown[i], &id);
        EXPECT(r == RKTLS_ERR_INVALID_ARGUMENT, "\"%s\": %s", unknown[i], rktls_result_str(r));
        EXPECT(id == 0xbeef, "\"%s\": out_id written on failure (0x%04x)", unknown[i], id);
    }
    EXPECT(strstr(last_error(), "RC4-SHA") != NULL, "message: %s", last_error());
    uint16_t id = 0xbeef;
    EXPECT(rktls_cipher_suite_from_name(NULL, &id) == RKTLS_ERR_NULL_ARGUMENT && id == 0xbeef,
           "NULL name");
    EXPECT(rktls_cipher_suite_from_name("TLS_AES_128_GCM_SHA256", NULL) ==
               RKTLS_ERR_NULL_ARGUMENT,
           "NULL out_id");
    EXPECT(strcmp(rktls_cipher_suite_name(0x0005), "unknown") == 0, "RC4 has no name");

    /* A TLS 1.2 suite chosen by its OpenSSL name is the one negotiated. */
    const char *want[] = {"ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384"};
    const rktls_client_config *ccfg = client_cfg();
    for (size_t i = 0; i < 2; i++) {
        uint16_t suite = 0, got = 0;
        EXPECT(rktls_cipher_suite_from_name(want[i], &suite) == RKTLS_OK, "%s", want[i]);
        rktls_server_config_builder *b = NULL;
        const rktls_server_config *cfg = NULL;
        rktls_server_config_builder_new(&b);
        rktls_server_config_builder_add_cert_key_files(b, path("server.pem"), path("server.key"));
        uint16_t tls12 = 0x0303;
        EXPECT(rktls_server_config_builder_set_versions(b, &tls12, 1) == RKTLS_OK, "TLS 1.2");
        rktls_result r = rktls_server_config_builder_set_cipher_suites(b, &suite, 1);
        EXPECT(r == RKTLS_OK, "set %s: %s: %s", want[i], rktls_result_str(r), last_error());
        EXPECT(rktls_server_config_builder_build(b, &cfg) == RKTLS_OK, "build: %s", last_error());
        rktls_result rs, rc;
        handshake(cfg, ccfg, "localhost", &rs, &rc, NULL, &got);
        EXPECT(rs == RKTLS_OK && rc == RKTLS_OK && got == suite,
               "%s: server %s, client %s, negotiated 0x%04x (%s)", want[i], rktls_result_str(rs),
               rktls_result_str(rc), got, rktls_cipher_suite_name(got));
        rktls_server_config_free(cfg);
    }
    rktls_client_config_free(ccfg);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: config_test CERTDIR\n");
        return 2;
    }
    dir = argv[1];
    key_types();
    sni_choice();
    bad_input();
    suite_names();
    return expect_summary();
}
