/*
 * C test of resumption across configs (as across worker processes): a
 * shared rktls_ticket_keys object rotated between handshakes, fixed keys
 * from nginx-format files, and session-store callbacks (a store that works,
 * one that fails, one that returns garbage). Run under valgrind by run.sh:
 * no leak in the key object, the configs holding it, or the callbacks.
 *
 *   fleet_test CERTDIR
 */
#include <rktls.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"

static const char *dir;

static const char *path(const char *name)
{
    static char buf[4][512];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", dir, name);
    return buf[i];
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

/* A TLS 1.2 handshake in buffer mode: 1 if it succeeded resumed, 0 if it
 * succeeded with a full handshake, -1 if it failed. */
static int handshake(const rktls_server_config *s_cfg, const rktls_client_config *c_cfg)
{
    rktls_connection *s = NULL, *c = NULL;
    rktls_result rs = RKTLS_WANT_READ, rc = RKTLS_WANT_READ;
    rktls_server_connection_new(s_cfg, &s);
    rktls_client_connection_new(c_cfg, "localhost", &c);
    for (int i = 0; i < 10 && (rs != RKTLS_OK || rc != RKTLS_OK); i++) {
        rc = rktls_connection_handshake(c);
        move(c, s);
        rs = rktls_connection_handshake(s);
        move(s, c);
    }
    int out = rs == RKTLS_OK && rc == RKTLS_OK ? rktls_connection_is_resumed(c) : -1;
    rktls_connection_free(s);
    rktls_connection_free(c);
    return out;
}

static const rktls_client_config *client_cfg(void)
{
    rktls_client_config_builder *b = NULL;
    const rktls_client_config *cfg = NULL;
    uint16_t tls12 = 0x0303;
    rktls_client_config_builder_new(&b);
    rktls_client_config_builder_add_roots_file(b, path("ca.pem"));
    rktls_client_config_builder_set_versions(b, &tls12, 1);
    rktls_client_config_builder_build(b, &cfg);
    return cfg;
}

static rktls_server_config_builder *server_builder(void)
{
    rktls_server_config_builder *b = NULL;
    rktls_server_config_builder_new(&b);
    rktls_server_config_builder_add_cert_key_files(b, path("server.pem"), path("server.key"));
    return b;
}

static const rktls_server_config *build(rktls_server_config_builder *b)
{
    const rktls_server_config *cfg = NULL;
    rktls_result r = rktls_server_config_builder_build(b, &cfg);
    EXPECT(r == RKTLS_OK, "build: %s", rktls_result_str(r));
    return cfg;
}

static void shared_keys(void)
{
    uint8_t k_old[80], k_new[48], bad[50];
    memset(k_old, 1, sizeof k_old);
    memset(k_new, 2, sizeof k_new);
    memset(bad, 3, sizeof bad);
    const rktls_ticket_keys *keys = NULL;
    EXPECT(rktls_ticket_keys_new(&keys) == RKTLS_OK && keys, "new");
    rktls_ticket_key list[2] = {{k_old, sizeof k_old}, {bad, sizeof bad}};
    EXPECT(rktls_ticket_keys_set(keys, list, 2) == RKTLS_ERR_INVALID_ARGUMENT, "50-byte key");
    EXPECT(rktls_ticket_keys_set(keys, list, 0) == RKTLS_ERR_INVALID_ARGUMENT, "empty list");
    EXPECT(rktls_ticket_keys_set(NULL, list, 1) == RKTLS_ERR_NULL_ARGUMENT, "NULL keys");
    EXPECT(rktls_ticket_keys_set(keys, list, 1) == RKTLS_OK, "set old");

    rktls_server_config_builder *ba = server_builder(), *bb = server_builder();
    rktls_server_config_builder_use_ticket_keys(ba, keys);
    rktls_server_config_builder_use_ticket_keys(bb, keys);
    const rktls_server_config *a = build(ba), *b = build(bb);
    rktls_ticket_keys_free(keys); /* the configs keep their references */

    const rktls_client_config *c = client_cfg();
    EXPECT(handshake(a, c) == 0, "first handshake full");
    EXPECT(handshake(b, c) == 1, "B resumes A's ticket");
    /* Rotation through the configs' reference is not possible from here
     * once freed; rebuild with a fresh object to rotate. */
    rktls_client_config_free(c);
    rktls_server_config_free(a);
    rktls_server_config_free(b);

    EXPECT(rktls_ticket_keys_new(&keys) == RKTLS_OK, "new");
    list[0] = (rktls_ticket_key){k_old, sizeof k_old};
    rktls_ticket_keys_set(keys, list, 1);
    ba = server_builder();
    rktls_server_config_builder_use_ticket_keys(ba, keys);
    a = build(ba);
    c = client_cfg();
    EXPECT(handshake(a, c) == 0, "full under the old key");
    rktls_ticket_key rotated[2] = {{k_new, sizeof k_new}, {k_old, sizeof k_old}};
    EXPECT(rktls_ticket_keys_set(keys, rotated, 2) == RKTLS_OK, "rotate");
    EXPECT(handshake(a, c) == 1, "old key still listed: resumed");
    EXPECT(rktls_ticket_keys_set(keys, rotated, 1) == RKTLS_OK, "drop the old key");
    const rktls_client_config *c2 = client_cfg();
    EXPECT(handshake(a, c2) == 0, "full under the new key");
    EXPECT(handshake(a, c2) == 1, "new key resumes");
    rktls_client_config_free(c2);
    rktls_client_config_free(c);
    rktls_server_config_free(a);
    rktls_ticket_keys_free(keys);
}

static void key_files(void)
{
    char p80[512], p48[512];
    snprintf(p80, sizeof p80, "%s", path("fleet-k80.key"));
    snprintf(p48, sizeof p48, "%s", path("fleet-k48.key"));
    const char *paths[2] = {p80, p48};
    uint8_t k[80];
    for (int i = 0; i < 2; i++) {
        memset(k, 7 + i, sizeof k);
        FILE *f = fopen(paths[i], "wb");
        fwrite(k, 1, i ? 48 : 80, f);
        fclose(f);
    }
    rktls_server_config_builder *ba = server_builder(), *bb = server_builder();
    EXPECT(rktls_server_config_builder_set_ticket_keys_file(ba, paths, 2) == RKTLS_OK, "files");
    /* B lists the 48-byte key first: it opens A's tickets with the second. */
    const char *rev[2] = {paths[1], paths[0]};
    EXPECT(rktls_server_config_builder_set_ticket_keys_file(bb, rev, 2) == RKTLS_OK, "files");
    const char *missing[1] = {path("no-such.key")};
    EXPECT(rktls_server_config_builder_set_ticket_keys_file(bb, missing, 1) ==
               RKTLS_ERR_CONFIG_FILE,
           "missing file");
    const char *wrong[1] = {path("server.pem")};
    EXPECT(rktls_server_config_builder_set_ticket_keys_file(bb, wrong, 1) ==
               RKTLS_ERR_INVALID_ARGUMENT,
           "a PEM file is not a key file");
    EXPECT(rktls_server_config_builder_set_ticket_lifetime(bb, 0) == RKTLS_ERR_INVALID_ARGUMENT,
           "lifetime 0");
    EXPECT(rktls_server_config_builder_set_ticket_lifetime(bb, 3600) == RKTLS_OK, "lifetime");
    const rktls_server_config *a = build(ba), *b = build(bb);
    const rktls_client_config *c = client_cfg();
    EXPECT(handshake(a, c) == 0, "full");
    EXPECT(handshake(b, c) == 1, "resumed with the same files in another order");
    rktls_client_config_free(c);
    rktls_server_config_free(a);
    rktls_server_config_free(b);
    remove(paths[0]);
    remove(paths[1]);
}

/* A tiny session store: one entry is enough for the test. */
struct store {
    uint8_t key[64], value[RKTLS_SESSION_VALUE_MAX];
    size_t key_len, value_len;
    int mode; /* 0 honest, 1 failing, 2 garbage */
    int gets, puts;
};

static int store_get(void *ud, const uint8_t *key, size_t key_len, bool remove, uint8_t *buf,
                     size_t buf_len, size_t *out_len)
{
    struct store *s = ud;
    (void)remove;
    s->gets++;
    if (s->mode == 1)
        return -1;
    if (s->mode == 2) {
        memset(buf, 0xa5, 100 < buf_len ? 100 : buf_len);
        *out_len = 100;
        return 1;
    }
    if (key_len != s->key_len || memcmp(key, s->key, key_len) || s->value_len > buf_len)
        return 0;
    memcpy(buf, s->value, s->value_len);
    *out_len = s->value_len;
    return 1;
}

static int store_put(void *ud, const uint8_t *key, size_t key_len, const uint8_t *value,
                     size_t value_len)
{
    struct store *s = ud;
    s->puts++;
    if (key_len > sizeof s->key || value_len > sizeof s->value)
        return -1;
    memcpy(s->key, key, key_len);
    memcpy(s->value, value, value_len);
    s->key_len = key_len;
    s->value_len = value_len;
    return 0;
}

static void callbacks(void)
{
    struct store *st = calloc(1, sizeof *st);
    rktls_server_config_builder *bx = server_builder(), *by = server_builder();
    EXPECT(rktls_server_config_builder_set_session_cache(bx, NULL, store_put, st) ==
               RKTLS_ERR_NULL_ARGUMENT,
           "get_cb required");
    rktls_server_config_builder_set_session_cache(bx, store_get, store_put, st);
    rktls_server_config_builder_set_session_cache(by, store_get, store_put, st);
    rktls_server_config_builder_set_tickets(bx, false);
    rktls_server_config_builder_set_tickets(by, false);
    const rktls_server_config *x = build(bx), *y = build(by);
    for (int mode = 0; mode < 3; mode++) {
        const rktls_client_config *c = client_cfg();
        st->mode = 0;
        EXPECT(handshake(x, c) == 0, "mode %d: full", mode);
        st->mode = mode;
        int got = handshake(y, c);
        EXPECT(got == (mode == 0 ? 1 : 0), "mode %d: second handshake %d", mode, got);
        rktls_client_config_free(c);
    }
    EXPECT(st->puts >= 3 && st->gets >= 3, "callbacks called: %d puts, %d gets", st->puts,
           st->gets);
    rktls_server_config_free(x);
    rktls_server_config_free(y);
    free(st);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fleet_test CERTDIR\n");
        return 2;
    }
    dir = argv[1];
    shared_keys();
    key_files();
    callbacks();
    return expect_summary();
}
