/*
 * Small helpers shared by the rktls examples: turning option strings into
 * what the rktls config builders take, and printing errors with their cause.
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

#endif
