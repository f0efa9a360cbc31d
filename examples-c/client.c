/*
 * client: connect to a TLS server with rktls (fd mode, blocking), verify it,
 * then fetch a file over HTTP/1.1 or echo a file through it.
 *
 *   client --port N --ca FILE [--host ADDR] [--sni NAME] [--tls12|--tls13]
 *          [--suites HEX,...] [--alpn LIST] [--cert FILE --key FILE]
 *          [--get PATH [--out FILE]] [--echo FILE] [--count N]
 *          [--ktls off|prefer|require] [--reneg-fail-fast] [--resume-port N]
 *          [--resume-after FILE]
 *
 * With --count N it connects N times with one config, so later connections
 * resume the session; with --resume-port, those later connections go to
 * that port (another server process sharing the ticket keys or cache);
 * with --resume-after, they wait until FILE exists (at most 20 s), so a
 * test can act between the first connection and the others. Prints one line per connection (version, suite, ALPN,
 * resumed) and exits non-zero with the result's message on any failure,
 * naming the alert received if the server sent one. --reneg-fail-fast ends
 * the connection at once if a TLS 1.2 server asks for renegotiation.
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

static void fail(rktls_connection *c, const char *what, rktls_result r)
{
    char why[768];
    uint8_t alert;
    describe_failure(c, r, why, sizeof why);
    fprintf(stderr, "client: %s failed: %s\n", what, why);
    if (rktls_connection_alert_received(c, &alert))
        fprintf(stderr, "client: received alert %s\n", rktls_alert_description_str(alert));
    if (rktls_connection_alert_sent(c, &alert))
        fprintf(stderr, "client: sent alert %s\n", rktls_alert_description_str(alert));
    if (r != RKTLS_ERR_IO && rktls_connection_errno(c))
        fprintf(stderr, "client: errno %d (%s)\n", rktls_connection_errno(c),
                strerror(rktls_connection_errno(c)));
    exit(1);
}

static void write_all(rktls_connection *c, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        size_t n = 0;
        rktls_result r = rktls_connection_write(c, buf, len, &n);
        if (r != RKTLS_OK)
            fail(c, "write", r);
        buf += n;
        len -= n;
    }
    rktls_result r = rktls_connection_flush(c);
    if (r != RKTLS_OK)
        fail(c, "flush", r);
}

/* Read until close_notify (or end of file if allowed); returns a malloc'd buffer. */
static uint8_t *read_to_end(rktls_connection *c, size_t *len, size_t stop_at, int *truncated)
{
    size_t cap = 65536, have = 0;
    uint8_t *buf = xrealloc(NULL, cap);
    *truncated = 0;
    while (have < stop_at) {
        if (cap - have < 16384)
            buf = xrealloc(buf, cap *= 2);
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, buf + have, cap - have, &n);
        if (r == RKTLS_CLOSED)
            break;
        if (r == RKTLS_ERR_TRUNCATED) {
            *truncated = 1;
            break;
        }
        if (r != RKTLS_OK) {
            fprintf(stderr, "client: read %zu bytes before the failure\n", have);
            fail(c, "read", r);
        }
        have += n;
    }
    if (have == cap)
        buf = xrealloc(buf, cap + 1);
    buf[have] = 0; /* lets the caller search the headers as a string */
    *len = have;
    return buf;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    if (n < 0 || fseek(f, 0, SEEK_SET) != 0) {
        perror(path);
        exit(1);
    }
    uint8_t *buf = xrealloc(NULL, (size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void usage(void)
{
    fprintf(stderr, "usage: client --port N --ca FILE [--host ADDR] [--sni NAME] "
                    "[--tls12|--tls13] [--suites HEX,...] [--alpn LIST] [--cert F --key F] "
                    "[--get PATH [--out FILE]] [--echo FILE] [--count N] [--ktls off|prefer|require] "
                    "[--reneg-fail-fast] [--resume-port N] [--resume-after FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *sni = "localhost", *get = NULL, *outp = NULL, *echo = NULL;
    const char *cert = NULL, *resume_after = NULL;
    int port = 0, count = 1, have_ca = 0, resume_port = 0;
    rktls_client_config_builder *b = NULL;
    rktls_result r = rktls_client_config_builder_new(&b);
    if (r != RKTLS_OK)
        die_rktls("builder", r);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tls12") || !strcmp(a, "--tls13")) {
            uint16_t ver = a[6] == '2' ? 0x0303 : 0x0304;
            if ((r = rktls_client_config_builder_set_versions(b, &ver, 1)) != RKTLS_OK)
                die_rktls("versions", r);
            continue;
        }
        if (!strcmp(a, "--reneg-fail-fast")) {
            if ((r = rktls_client_config_builder_set_renegotiation_fail_fast(b, true)) != RKTLS_OK)
                die_rktls("renegotiation fail-fast", r);
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--port")) {
            port = atoi(v);
        } else if (!strcmp(a, "--host")) {
            host = v;
        } else if (!strcmp(a, "--sni")) {
            sni = v;
        } else if (!strcmp(a, "--ca")) {
            if ((r = rktls_client_config_builder_add_roots_file(b, v)) != RKTLS_OK)
                die_rktls(v, r);
            have_ca = 1;
        } else if (!strcmp(a, "--suites")) {
            uint16_t s[16];
            size_t n = parse_suites(v, s, 16);
            if ((r = rktls_client_config_builder_set_cipher_suites(b, s, n)) != RKTLS_OK)
                die_rktls("suites", r);
        } else if (!strcmp(a, "--alpn")) {
            uint8_t w[256];
            size_t n = alpn_wire(v, w, sizeof w);
            if ((r = rktls_client_config_builder_set_alpn(b, w, n)) != RKTLS_OK)
                die_rktls("alpn", r);
        } else if (!strcmp(a, "--cert")) {
            cert = v;
        } else if (!strcmp(a, "--key")) {
            if (!cert)
                usage();
            if ((r = rktls_client_config_builder_set_cert_key_files(b, cert, v)) != RKTLS_OK)
                die_rktls(cert, r);
        } else if (!strcmp(a, "--get")) {
            get = v;
        } else if (!strcmp(a, "--out")) {
            outp = v;
        } else if (!strcmp(a, "--echo")) {
            echo = v;
        } else if (!strcmp(a, "--resume-after")) {
            resume_after = v;
        } else if (!strcmp(a, "--resume-port")) {
            resume_port = atoi(v);
        } else if (!strcmp(a, "--count")) {
            count = atoi(v);
        } else if (!strcmp(a, "--ktls")) {
            int m = ktls_mode(v);
            if (m < 0)
                usage();
            if ((r = rktls_client_config_builder_set_ktls(b, (uint32_t)m)) != RKTLS_OK)
                die_rktls("ktls", r);
        } else {
            usage();
        }
    }
    if (!port || !have_ca || (!get && !echo) || count < 1)
        usage();
    char req[2300];
    size_t req_len = 0;
    if (get) {
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", get, sni);
        /* snprintf returns the length it wanted, not what it wrote. */
        if (n < 0 || (size_t)n >= sizeof req) {
            fprintf(stderr, "client: request too long (path or host over %zu bytes)\n",
                    sizeof req);
            exit(1);
        }
        req_len = (size_t)n;
    }
    const rktls_client_config *config = NULL;
    if ((r = rktls_client_config_builder_build(b, &config)) != RKTLS_OK)
        die_rktls("build", r);
    signal(SIGPIPE, SIG_IGN);

    for (int i = 0; i < count; i++) {
        for (int t = 0; i && resume_after && access(resume_after, F_OK) != 0; t++) {
            if (t == 2000) {
                fprintf(stderr, "client: %s did not appear\n", resume_after);
                return 1;
            }
            usleep(10000);
        }
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(i && resume_port ? resume_port : port))};
        inet_pton(AF_INET, host, &sa.sin_addr);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("connect");
            return 1;
        }
        rktls_connection *c = NULL;
        if ((r = rktls_client_connection_new(config, sni, &c)) != RKTLS_OK)
            die_rktls("connection", r);
        if ((r = rktls_connection_set_fd(c, fd)) != RKTLS_OK)
            fail(c, "set_fd", r);
        if ((r = rktls_connection_handshake(c)) != RKTLS_OK)
            fail(c, "handshake", r);
        const uint8_t *alpn;
        size_t alpn_len = 0;
        rktls_connection_alpn(c, &alpn, &alpn_len);
        printf("client: conn %d: %s %s alpn=%.*s resumed=%s ktls=%s\n", i + 1,
               version_name(rktls_connection_protocol_version(c)),
               rktls_cipher_suite_name(rktls_connection_cipher_suite(c)),
               (int)(alpn_len ? alpn_len : 1), alpn_len ? (const char *)alpn : "-",
               rktls_connection_is_resumed(c) ? "yes" : "no", ktls_state(c));
        fflush(stdout);

        size_t len = 0;
        int truncated = 0;
        if (echo) {
            size_t sent_len;
            uint8_t *sent = slurp(echo, &sent_len);
            write_all(c, sent, sent_len);
            uint8_t *back = read_to_end(c, &len, sent_len, &truncated);
            if (len != sent_len || memcmp(sent, back, len) != 0) {
                fprintf(stderr, "client: echo mismatch: sent %zu bytes, got %zu back\n", sent_len,
                        len);
                return 1;
            }
            printf("client: echo ok %zu bytes\n", len);
            free(sent);
            free(back);
        } else {
            write_all(c, (const uint8_t *)req, req_len);
            uint8_t *resp = read_to_end(c, &len, SIZE_MAX, &truncated);
            uint8_t *body = (uint8_t *)strstr((char *)resp, "\r\n\r\n");
            if (len < 12 || !body || memcmp(resp + 9, "200", 3) != 0) {
                fprintf(stderr, "client: bad HTTP response (%zu bytes)\n", len);
                return 1;
            }
            body += 4;
            size_t body_len = len - (size_t)(body - resp);
            const char *cl = strstr((char *)resp, "Content-Length: ");
            if (!cl)
                cl = strstr((char *)resp, "content-length: ");
            if (cl && (size_t)strtoull(cl + 16, NULL, 10) != body_len) {
                fprintf(stderr, "client: body is %zu bytes, Content-Length says %s\n", body_len,
                        cl + 16);
                return 1;
            }
            if (truncated && !cl) {
                fprintf(stderr, "client: response truncated (no close_notify)\n");
                return 1;
            }
            if (outp) {
                FILE *f = fopen(outp, "wb");
                if (!f || fwrite(body, 1, body_len, f) != body_len || fclose(f) != 0) {
                    perror(outp);
                    return 1;
                }
            }
            printf("client: got %zu bytes%s\n", body_len,
                   truncated ? " (peer closed without close_notify)" : "");
            free(resp);
        }
        if (!truncated) {
            while ((r = rktls_connection_shutdown(c)) == RKTLS_WANT_WRITE)
                ;
            if (r != RKTLS_OK && r != RKTLS_ERR_IO)
                fail(c, "shutdown", r);
        }
        rktls_connection_free(c);
        close(fd);
    }
    rktls_client_config_free(config);
    return 0;
}
