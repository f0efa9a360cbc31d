/*
 * server_blocking: a thread-per-connection TLS file server (or echo server)
 * on rktls, with blocking sockets in fd mode.
 *
 *   server_blocking --cert FILE --key FILE [--sni NAME] [--cert F --key F --sni NAME]...
 *                   [--port N] [--root DIR] [--echo] [--direct] [--tls12|--tls13]
 *                   [--suites HEX,...] [--alpn LIST] [--client-ca FILE]
 *                   [--ktls off|prefer|require] [--max-conns N] [--max-threads N]
 *                   [--timeout SECS]
 *
 * Each connection starts with an acceptor: the ClientHello is read first,
 * its SNI picks the config (the certificate given with that --sni name; the
 * first certificate otherwise), then the handshake continues. A rejected
 * client is logged with the alert it was sent. --direct skips the acceptor
 * and uses one config holding every certificate (rktls picks by SNI).
 *
 * With --ktls prefer (or require) the record layer moves into the kernel
 * after the handshake where it can, and files are sent with zero-copy
 * sendfile(2); elsewhere rktls_connection_sendfile() encrypts in userspace.
 *
 * At most --max-threads connections (default 64) are served at once: the
 * accept loop waits for a free thread, so further clients wait in the
 * listen backlog instead of each costing a thread. Every socket gets
 * receive and send timeouts (--timeout, default 30 s): a client that stalls
 * (in the handshake, mid-request or not reading the response) is dropped
 * when it expires, so an idle client cannot pin a thread forever. On a
 * blocking socket with a timeout, RKTLS_WANT_READ/RKTLS_WANT_WRITE mean the
 * timeout expired (rktls retries EINTR itself).
 *
 * Prints "READY port=N" once listening (port 0 picks a free one), and one
 * line per connection. With --max-conns it exits after that many.
 */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static struct cert_set certs; /* one config per certificate */
static const rktls_server_config *all_certs; /* every certificate, for --direct */
static const char *root = ".";
static int echo_mode, direct_mode;
static int timeout_secs = 30;
static sem_t free_threads; /* connections that may still start */
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
    int64_t off = 0;
    while (r == RKTLS_OK && off < st.st_size) {
        size_t n = 0;
        r = rktls_connection_sendfile(c, fd, &off, (size_t)(st.st_size - off), &n);
        if (r == RKTLS_OK && n == 0)
            break; /* the file shrank */
    }
    if (r == RKTLS_OK)
        r = rktls_connection_flush(c);
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

/* Log a rejected client and the alert it was sent. */
static void log_rejected(const char *stage, rktls_result r, const rktls_alert *alert)
{
    char line[256];
    char detail[512] = "";
    size_t n;
    rktls_last_error_message(detail, sizeof detail, &n);
    if (rktls_alert_present(alert))
        snprintf(line, sizeof line, "alert sent: %s",
                 rktls_alert_description_str(rktls_alert_get_description(alert)));
    else
        snprintf(line, sizeof line, "no alert owed");
    pthread_mutex_lock(&out_lock);
    printf("rejected at %s: %s: %s [%s]\n", stage, rktls_result_str(r), detail, line);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
}

/* Acceptor path: read the ClientHello, pick the config by SNI, continue.
 * After a failed accept, the alert is sent (rktls wrote it to the fd), then
 * the socket is closed by the caller. */
static rktls_result start_with_acceptor(int fd, rktls_connection **conn)
{
    rktls_acceptor *acc = NULL;
    rktls_accepted *hello = NULL;
    rktls_alert *alert = NULL;
    rktls_result r = rktls_acceptor_new(&acc);
    if (r == RKTLS_OK)
        r = rktls_acceptor_set_fd(acc, fd);
    if (r == RKTLS_OK)
        r = rktls_acceptor_accept(acc, &hello, &alert); /* WANT_READ: the timeout expired */
    if (r != RKTLS_OK) {
        log_rejected("accept", r, alert);
        goto out;
    }
    char sni[256] = "";
    size_t n;
    rktls_accepted_server_name(hello, sni, sizeof sni, &n);
    r = rktls_accepted_into_connection(hello, cert_set_choose(&certs, sni), conn, &alert);
    if (r != RKTLS_OK)
        log_rejected("handshake", r, alert);
out:
    rktls_alert_free(alert);
    rktls_accepted_free(hello);
    rktls_acceptor_free(acc);
    return r;
}

/* Direct path: one config, rktls picks the certificate by SNI. */
static rktls_result start_direct(int fd, rktls_connection **conn)
{
    rktls_result r = rktls_server_connection_new(all_certs, conn);
    if (r == RKTLS_OK)
        r = rktls_connection_set_fd(*conn, fd);
    return r;
}

/* Close after a refusal without destroying the alert: closing a socket
 * that still holds unread client bytes makes the kernel send a reset, which
 * can discard the alert before the client reads it. So: send FIN, read
 * what the client still sends (bounded in time and size), then close. */
static void lingering_close(int fd)
{
    struct timeval tv = {.tv_sec = 1};
    char sink[4096];
    shutdown(fd, SHUT_WR);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    for (int i = 0; i < 16 && read(fd, sink, sizeof sink) > 0; i++)
        ;
    close(fd);
}

static void *handle(void *arg)
{
    int fd = (int)(intptr_t)arg;
    rktls_connection *c = NULL;
    char why[768];
    rktls_result r = direct_mode ? start_direct(fd, &c) : start_with_acceptor(fd, &c);
    if (c == NULL) {
        lingering_close(fd);
        fd = -1;
        goto out;
    }
    if (r == RKTLS_OK)
        r = rktls_connection_handshake(c);
    if (r != RKTLS_OK) {
        uint8_t alert;
        describe_failure(c, r, why, sizeof why);
        logf_line("handshake failed: %s [alert sent: %s]\n", why,
                  rktls_connection_alert_sent(c, &alert) ? rktls_alert_description_str(alert)
                                                         : "none");
        lingering_close(fd);
        fd = -1;
        goto out;
    }
    char sni[256] = "", info[512];
    size_t n = 0;
    const uint8_t *alpn;
    size_t alpn_len = 0;
    rktls_connection_server_name(c, sni, sizeof sni, &n);
    rktls_connection_alpn(c, &alpn, &alpn_len);
    snprintf(info, sizeof info, "%s %s sni=%s alpn=%.*s resumed=%s ktls=%s",
             version_name(rktls_connection_protocol_version(c)),
             rktls_cipher_suite_name(rktls_connection_cipher_suite(c)), sni[0] ? sni : "-",
             (int)(alpn_len ? alpn_len : 1), alpn_len ? (const char *)alpn : "-",
             rktls_connection_is_resumed(c) ? "yes" : "no", ktls_state(c));
    logf_line("handshake ok: %s%s\n", info, "");

    r = echo_mode ? serve_echo(c) : serve_http(c);
    if (r == RKTLS_OK || r == RKTLS_CLOSED) {
        r = rktls_connection_shutdown(c); /* WANT_WRITE: the send timeout expired */
        logf_line("closed: %s%s\n", r == RKTLS_OK ? "clean" : rktls_result_str(r), "");
        /* The client may still send (its close_notify): do not reset it. */
        lingering_close(fd);
        fd = -1;
    } else {
        describe_failure(c, r, why, sizeof why);
        logf_line("connection ended: %s%s\n", why, "");
    }
out:
    rktls_connection_free(c);
    if (fd >= 0)
        close(fd);
    sem_post(&free_threads);
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: server_blocking --cert FILE --key FILE [--sni NAME] "
                    "[--cert F --key F --sni NAME]... [--port N] [--root DIR] [--echo] "
                    "[--direct] [--tls12|--tls13] [--suites HEX,...] [--alpn LIST] "
                    "[--client-ca FILE] [--ktls off|prefer|require] [--max-conns N] "
                    "[--max-threads N] [--timeout SECS]\n");
    exit(2);
}

/* The options every config shares. */
static uint16_t versions[2], suites[16];
static size_t nversions, nsuites;
static uint8_t alpn[256];
static size_t alpn_len;
static const char *client_ca;
static int ktls = RKTLS_KTLS_OFF;

static void apply_options(rktls_server_config_builder *b)
{
    rktls_result r;
    if (nversions && (r = rktls_server_config_builder_set_versions(b, versions, nversions)))
        die_rktls("versions", r);
    if (nsuites && (r = rktls_server_config_builder_set_cipher_suites(b, suites, nsuites)))
        die_rktls("suites", r);
    if (alpn_len && (r = rktls_server_config_builder_set_alpn(b, alpn, alpn_len)))
        die_rktls("alpn", r);
    if (client_ca && (r = rktls_server_config_builder_set_client_verify_file(b, client_ca, true)))
        die_rktls("client-ca", r);
    if ((r = rktls_server_config_builder_set_ktls(b, (uint32_t)ktls)))
        die_rktls("ktls", r);
}

int main(int argc, char **argv)
{
    int port = 0, max_conns = -1, max_threads = 64;
    rktls_result r;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--echo")) {
            echo_mode = 1;
            continue;
        }
        if (!strcmp(a, "--direct")) {
            direct_mode = 1;
            continue;
        }
        if (!strcmp(a, "--tls12") || !strcmp(a, "--tls13")) {
            versions[nversions++ % 2] = a[6] == '2' ? 0x0303 : 0x0304;
            continue;
        }
        if (!v)
            usage();
        i++;
        int taken = cert_option(&certs, a, v);
        if (taken < 0)
            usage();
        if (taken)
            continue;
        if (!strcmp(a, "--port")) {
            port = atoi(v);
        } else if (!strcmp(a, "--root")) {
            root = v;
        } else if (!strcmp(a, "--max-conns")) {
            max_conns = atoi(v);
        } else if (!strcmp(a, "--max-threads")) {
            if ((max_threads = atoi(v)) < 1)
                usage();
        } else if (!strcmp(a, "--timeout")) {
            if ((timeout_secs = atoi(v)) < 1)
                usage();
        } else if (!strcmp(a, "--suites")) {
            nsuites = parse_suites(v, suites, 16);
        } else if (!strcmp(a, "--alpn")) {
            alpn_len = alpn_wire(v, alpn, sizeof alpn);
        } else if (!strcmp(a, "--client-ca")) {
            client_ca = v;
        } else if (!strcmp(a, "--ktls")) {
            if ((ktls = ktls_mode(v)) < 0)
                usage();
        } else {
            usage();
        }
    }
    if (certs.n == 0 || cert_set_build(&certs, apply_options) != 0)
        usage();
    rktls_server_config_builder *all = NULL;
    if ((r = rktls_server_config_builder_new(&all)) != RKTLS_OK)
        die_rktls("builder", r);
    apply_options(all);
    for (int i = 0; i < certs.n; i++)
        if ((r = rktls_server_config_builder_add_cert_key_files(all, certs.cert[i], certs.key[i])) !=
            RKTLS_OK)
            die_rktls(certs.cert[i], r);
    if ((r = rktls_server_config_builder_build(all, &all_certs)) != RKTLS_OK)
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

    sem_init(&free_threads, 0, (unsigned)max_threads);
    pthread_t threads[1024];
    int nthreads = 0;
    for (int served = 0; max_conns < 0 || served < max_conns; served++) {
        while (sem_wait(&free_threads) != 0) /* EINTR */
            ;
        int fd = accept(ls, NULL, NULL);
        if (fd < 0) {
            sem_post(&free_threads);
            if (errno == EINTR)
                continue;
            perror("accept");
            break;
        }
        struct timeval tv = {.tv_sec = timeout_secs};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        pthread_t t;
        if (pthread_create(&t, NULL, handle, (void *)(intptr_t)fd) != 0) {
            close(fd);
            sem_post(&free_threads);
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
    cert_set_free(&certs);
    rktls_server_config_free(all_certs);
    return 0;
}
