/*
 * server_blocking: a thread-per-connection TLS file server (or echo server)
 * on rktls, with blocking sockets in fd mode.
 *
 *   server_blocking --cert FILE --key FILE [--cert FILE --key FILE]...
 *                   [--port N] [--root DIR] [--echo] [--tls12|--tls13]
 *                   [--suites HEX,...] [--alpn LIST] [--client-ca FILE]
 *                   [--max-conns N]
 *
 * Several --cert/--key pairs are chosen between by SNI. Prints
 * "READY port=N" once listening (port 0 picks a free one), and one line per
 * connection: how the handshake ended, and for failures the alert sent.
 * With --max-conns it exits after serving that many connections.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static const rktls_server_config *config;
static const char *root = ".";
static int echo_mode;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void logf_line(const char *fmt, const char *a, const char *b)
{
    pthread_mutex_lock(&out_lock);
    printf(fmt, a, b);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

/* Write all of buf; returns 0 or the failing result. */
static rktls_result write_all(rktls_connection *c, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        size_t n = 0;
        rktls_result r = rktls_connection_write(c, buf, len, &n);
        if (r != RKTLS_OK)
            return r;
        buf += n;
        len -= n;
    }
    return rktls_connection_flush(c);
}

static rktls_result serve_file(rktls_connection *c, const char *path, int keep_alive)
{
    char full[4096], head[256];
    struct stat st;
    int fd = -1;
    if (strstr(path, "..") == NULL) {
        snprintf(full, sizeof full, "%s/%s", root, path[0] == '/' ? path + 1 : path);
        fd = open(full, O_RDONLY);
    }
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        const char *nf = "HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\n\r\nnot found\n";
        if (fd >= 0)
            close(fd);
        return write_all(c, (const uint8_t *)nf, strlen(nf));
    }
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Length: %lld\r\nConnection: %s\r\n\r\n",
                      (long long)st.st_size, keep_alive ? "keep-alive" : "close");
    rktls_result r = write_all(c, (const uint8_t *)head, (size_t)hl);
    static __thread uint8_t buf[65536];
    ssize_t got;
    while (r == RKTLS_OK && (got = read(fd, buf, sizeof buf)) > 0)
        r = write_all(c, buf, (size_t)got);
    close(fd);
    return r;
}

/* HTTP/1.x: GET requests, keep-alive unless asked to close. */
static rktls_result serve_http(rktls_connection *c)
{
    char req[8192];
    size_t have = 0;
    for (;;) {
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, (uint8_t *)req + have, sizeof req - 1 - have, &n);
        if (r != RKTLS_OK)
            return r;
        have += n;
        req[have] = 0;
        char *end;
        while ((end = strstr(req, "\r\n\r\n")) != NULL) {
            char method[16], path[2048], proto[16];
            if (sscanf(req, "%15s %2047s %15s", method, path, proto) != 3)
                return RKTLS_ERR_INVALID_ARGUMENT;
            int keep = strcmp(proto, "HTTP/1.1") == 0 && strstr(req, "onnection: close") == NULL;
            r = serve_file(c, path, keep);
            if (r != RKTLS_OK || !keep)
                return r;
            size_t used = (size_t)(end + 4 - req);
            memmove(req, req + used, have - used + 1);
            have -= used;
        }
        if (have == sizeof req - 1)
            return RKTLS_ERR_INVALID_ARGUMENT;
    }
}

static rktls_result serve_echo(rktls_connection *c)
{
    uint8_t buf[16384];
    for (;;) {
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, buf, sizeof buf, &n);
        if (r != RKTLS_OK)
            return r;
        r = write_all(c, buf, n);
        if (r != RKTLS_OK)
            return r;
    }
}

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    rktls_connection *c = NULL;
    char why[768];
    rktls_result r = rktls_server_connection_new(config, &c);
    if (r == RKTLS_OK)
        r = rktls_connection_set_fd(c, fd);
    if (r == RKTLS_OK)
        r = rktls_connection_handshake(c);
    if (r != RKTLS_OK) {
        uint8_t alert;
        describe_failure(c, r, why, sizeof why);
        logf_line("handshake failed: %s%s\n", why,
                  rktls_connection_alert_sent(c, &alert) ? " [alert sent]" : "");
        goto out;
    }
    char sni[256] = "", info[512];
    size_t n = 0;
    const uint8_t *alpn;
    size_t alpn_len = 0;
    rktls_connection_server_name(c, sni, sizeof sni, &n);
    rktls_connection_alpn(c, &alpn, &alpn_len);
    snprintf(info, sizeof info, "%s %s sni=%s alpn=%.*s resumed=%s",
             version_name(rktls_connection_protocol_version(c)),
             rktls_cipher_suite_name(rktls_connection_cipher_suite(c)), sni[0] ? sni : "-",
             (int)(alpn_len ? alpn_len : 1), alpn_len ? (const char *)alpn : "-",
             rktls_connection_is_resumed(c) ? "yes" : "no");
    logf_line("handshake ok: %s%s\n", info, "");

    r = echo_mode ? serve_echo(c) : serve_http(c);
    if (r == RKTLS_OK || r == RKTLS_CLOSED) {
        while ((r = rktls_connection_shutdown(c)) == RKTLS_WANT_WRITE)
            ;
        logf_line("closed: %s%s\n", r == RKTLS_OK ? "clean" : rktls_result_str(r), "");
    } else {
        describe_failure(c, r, why, sizeof why);
        logf_line("connection ended: %s%s\n", why, "");
    }
out:
    rktls_connection_free(c);
    close(fd);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: server_blocking --cert FILE --key FILE [--cert F --key F]... "
                    "[--port N] [--root DIR] [--echo] [--tls12|--tls13] [--suites HEX,...] "
                    "[--alpn LIST] [--client-ca FILE] [--max-conns N]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    rktls_server_config_builder *b = NULL;
    rktls_result r = rktls_server_config_builder_new(&b);
    if (r != RKTLS_OK)
        die_rktls("builder", r);
    int port = 0, max_conns = -1, ncerts = 0;
    const char *cert = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--echo")) {
            echo_mode = 1;
            continue;
        }
        if (!strcmp(a, "--tls12") || !strcmp(a, "--tls13")) {
            uint16_t ver = a[6] == '2' ? 0x0303 : 0x0304;
            if ((r = rktls_server_config_builder_set_versions(b, &ver, 1)) != RKTLS_OK)
                die_rktls("versions", r);
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--cert")) {
            cert = v;
        } else if (!strcmp(a, "--key")) {
            if (!cert)
                usage();
            if ((r = rktls_server_config_builder_add_cert_key_files(b, cert, v)) != RKTLS_OK)
                die_rktls(cert, r);
            cert = NULL;
            ncerts++;
        } else if (!strcmp(a, "--port")) {
            port = atoi(v);
        } else if (!strcmp(a, "--root")) {
            root = v;
        } else if (!strcmp(a, "--max-conns")) {
            max_conns = atoi(v);
        } else if (!strcmp(a, "--suites")) {
            uint16_t s[16];
            size_t n = parse_suites(v, s, 16);
            if ((r = rktls_server_config_builder_set_cipher_suites(b, s, n)) != RKTLS_OK)
                die_rktls("suites", r);
        } else if (!strcmp(a, "--alpn")) {
            uint8_t w[256];
            size_t n = alpn_wire(v, w, sizeof w);
            if ((r = rktls_server_config_builder_set_alpn(b, w, n)) != RKTLS_OK)
                die_rktls("alpn", r);
        } else if (!strcmp(a, "--client-ca")) {
            if ((r = rktls_server_config_builder_set_client_verify_file(b, v, true)) != RKTLS_OK)
                die_rktls("client-ca", r);
        } else {
            usage();
        }
    }
    if (ncerts == 0)
        usage();
    if ((r = rktls_server_config_builder_build(b, &config)) != RKTLS_OK)
        die_rktls("build", r);

    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 128) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) != 0) {
        perror("listen");
        return 1;
    }
    printf("READY port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    pthread_t threads[1024];
    int nthreads = 0;
    for (int served = 0; max_conns < 0 || served < max_conns; served++) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            perror("accept");
            break;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, handle, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        if (max_conns >= 0 && nthreads < 1024)
            threads[nthreads++] = t;
        else
            pthread_detach(t);
    }
    for (int i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    close(ls);
    rktls_server_config_free(config);
    return 0;
}
