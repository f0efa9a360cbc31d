/*
 * Small helpers shared by the rktls examples: turning option strings into
 * what the rktls config builders take, the servers' certificates (one
 * config each, chosen by SNI), and printing errors with their cause.
 */
#ifndef RKTLS_EXAMPLES_COMMON_H
#define RKTLS_EXAMPLES_COMMON_H

#include <rktls.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Print "what: <result message>: <detail>" for the last failed call on this
 * thread, and exit(1). */
static inline void die_rktls(const char *what, rktls_result r)
{
    char detail[512] = "";
    size_t n = 0;
    rktls_last_error_message(detail, sizeof detail, &n);
    fprintf(stderr, "%s: %s (%u): %s\n", what, rktls_result_str(r), (unsigned)r, detail);
    exit(1);
}

/* realloc that exits with a message instead of returning NULL (the
 * examples have no better answer to running out of memory). */
static inline void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return q;
}

/* Describe a connection failure: the result, the connection's message (it
 * names the alert sent or received), or errno for I/O errors. */
static inline void describe_failure(const rktls_connection *conn, rktls_result r, char *buf,
                                    size_t len)
{
    char detail[512] = "";
    size_t n = 0;
    rktls_connection_error_message(conn, detail, sizeof detail, &n);
    if (r == RKTLS_ERR_IO) {
        snprintf(buf, len, "%s (errno %d: %s)", rktls_result_str(r), rktls_connection_errno(conn),
                 strerror(rktls_connection_errno(conn)));
    } else {
        snprintf(buf, len, "%s (%u)%s%s", rktls_result_str(r), (unsigned)r, n ? ": " : "", detail);
    }
}

/* "1301,c02b" -> {0x1301, 0xc02b}. Returns the count. */
static inline size_t parse_suites(const char *s, uint16_t *out, size_t max)
{
    size_t n = 0;
    while (*s && n < max) {
        char *end;
        out[n++] = (uint16_t)strtoul(s, &end, 16);
        if (*end != ',')
            break;
        s = end + 1;
    }
    return n;
}

/* "h2,http/1.1" -> "\x02h2\x08http/1.1" (ALPN wire format). Returns the length. */
static inline size_t alpn_wire(const char *list, uint8_t *out, size_t max)
{
    size_t len = 0;
    while (*list) {
        const char *comma = strchr(list, ',');
        size_t n = comma ? (size_t)(comma - list) : strlen(list);
        if (len + 1 + n > max || n > 255)
            break;
        out[len++] = (uint8_t)n;
        memcpy(out + len, list, n);
        len += n;
        list += n + (comma ? 1 : 0);
    }
    return len;
}

/* "off", "prefer" or "require" -> RKTLS_KTLS_*; -1 if unknown. */
static inline int ktls_mode(const char *s)
{
    return !strcmp(s, "off") ? RKTLS_KTLS_OFF
           : !strcmp(s, "prefer") ? RKTLS_KTLS_PREFER
           : !strcmp(s, "require") ? RKTLS_KTLS_REQUIRE
                                   : -1;
}

static inline const char *ktls_state(const rktls_connection *c)
{
    int tx = rktls_connection_ktls_tx(c), rx = rktls_connection_ktls_rx(c);
    return tx && rx ? "tx+rx" : tx ? "tx" : rx ? "rx" : "off";
}

static inline const char *version_name(uint16_t v)
{
    return v == 0x0304 ? "TLSv1.3" : v == 0x0303 ? "TLSv1.2" : "none";
}

/* A server's certificates, from "--cert FILE --key FILE [--sni NAME]"
 * options, each with a config of its own. */
#define MAX_CERTS 8
struct cert_set {
    int n;
    const char *cert[MAX_CERTS], *key[MAX_CERTS], *sni[MAX_CERTS];
    const rktls_server_config *config[MAX_CERTS];
};

/* Take option `opt` with value `val` if it is --cert, --key or --sni:
 * 1 if taken, 0 if it is another option, -1 if misused (too many
 * certificates, --key or --sni before any --cert). */
static inline int cert_option(struct cert_set *s, const char *opt, const char *val)
{
    if (!strcmp(opt, "--cert")) {
        if (s->n == MAX_CERTS)
            return -1;
        s->cert[s->n] = val;
        s->key[s->n] = NULL;
        s->sni[s->n++] = NULL;
        return 1;
    }
    int key = !strcmp(opt, "--key"), sni = !strcmp(opt, "--sni");
    if (!key && !sni)
        return 0;
    if (s->n == 0)
        return -1;
    if (key)
        s->key[s->n - 1] = val;
    else
        s->sni[s->n - 1] = val;
    return 1;
}

/* Build one config per certificate; `apply` sets the options they share.
 * Exits with the cause on failure; -1 if a certificate has no --key. */
static inline int cert_set_build(struct cert_set *s, void (*apply)(rktls_server_config_builder *))
{
    rktls_result r;
    for (int i = 0; i < s->n; i++) {
        rktls_server_config_builder *b = NULL;
        if (!s->key[i])
            return -1;
        if ((r = rktls_server_config_builder_new(&b)) != RKTLS_OK)
            die_rktls("builder", r);
        apply(b);
        if ((r = rktls_server_config_builder_add_cert_key_files(b, s->cert[i], s->key[i])) != RKTLS_OK)
            die_rktls(s->cert[i], r);
        if ((r = rktls_server_config_builder_build(b, &s->config[i])) != RKTLS_OK)
            die_rktls("build", r);
    }
    return 0;
}

/* The config of the certificate whose --sni is `sni`, else the first. */
static inline const rktls_server_config *cert_set_choose(const struct cert_set *s, const char *sni)
{
    for (int i = 0; i < s->n; i++)
        if (s->sni[i] && !strcmp(s->sni[i], sni))
            return s->config[i];
    return s->config[0];
}

static inline void cert_set_free(struct cert_set *s)
{
    for (int i = 0; i < s->n; i++)
        rktls_server_config_free(s->config[i]);
    s->n = 0;
}

#endif
