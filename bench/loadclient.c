/*
 * loadclient: the benchmarks' TLS 1.3 load client, on OpenSSL's libssl. It is
 * the same for every server measured, so differences are the server's.
 *
 *   loadclient full   PORT N [--path P]      N sequential full handshakes
 *   loadclient resume PORT N [--path P]      1 full, then N resumed (tickets)
 *   loadclient bulk   PORT N --path P --expect BYTES [--suite NAME]
 *                                            N sequential downloads of P
 *   loadclient hold   PORT N                 N handshakes, then hold them all
 *
 * Every connection: TCP to 127.0.0.1:PORT, TLS 1.3 only, X25519 only, no
 * certificate verification (the client's work is not measured), then (except
 * hold) "GET P HTTP/1.1" with "Connection: close", and the response is read
 * to its end (close_notify or EOF). --suite picks the one TLS 1.3 cipher
 * suite offered (default: OpenSSL's list).
 *
 * Output, one line: "result mode=M n=N resumed=R body=B secs=S", where
 * body is the response body bytes received over all connections and secs the
 * wall time of the N connections. hold prints "HELD n=N" once all N are
 * established, then waits for standard input to close. Exits 1 with a reason
 * on any failure (a refused handshake, a response other than 200, a short
 * body with --expect).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;

static void die(const char *what)
{
    fprintf(stderr, "loadclient: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("connect failed");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* A TLS 1.3 connection over a new socket, handshake done. */
static SSL *tls_connect(SSL_CTX *ctx, SSL_SESSION *resume)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        die("SSL_new");
    SSL_set_fd(ssl, tcp_connect());
    SSL_set_tlsext_host_name(ssl, "localhost");
    if (resume)
        SSL_set_session(ssl, resume);
    if (SSL_connect(ssl) != 1)
        die("handshake failed");
    return ssl;
}

/* Close without sending close_notify, keeping the session resumable
 * (OpenSSL drops a session whose connection was not shut down). */
static void tls_close(SSL *ssl)
{
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    close(SSL_get_fd(ssl));
    SSL_free(ssl);
}

/* Send the request, read the whole response; returns the body's length. */
static long long fetch(SSL *ssl, const char *path)
{
    char req[512], buf[65536];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                     path);
    if (SSL_write(ssl, req, n) != n)
        die("request not sent");
    long long total = 0, head = -1;
    char first[64] = "";
    size_t first_len = 0;
    uint32_t last4 = 0; /* the last four bytes seen: the head ends at "\r\n\r\n" */
    for (;;) {
        int r = SSL_read(ssl, buf, sizeof buf);
        if (r <= 0) {
            if (SSL_get_error(ssl, r) == SSL_ERROR_ZERO_RETURN)
                break;
            die("response read failed");
        }
        if (first_len < sizeof first - 1) {
            size_t k = (size_t)r < sizeof first - 1 - first_len ? (size_t)r : sizeof first - 1 - first_len;
            memcpy(first + first_len, buf, k);
            first_len += k;
        }
        for (int i = 0; head < 0 && i < r; i++) {
            last4 = last4 << 8 | (uint8_t)buf[i];
            if (last4 == 0x0d0a0d0a)
                head = total + i + 1;
        }
        total += r;
    }
    if (strncmp(first, "HTTP/1.", 7) != 0 || strncmp(first + 8, " 200", 4) != 0)
        die("response is not 200");
    if (head < 0)
        die("response has no complete head");
    return total - head;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        die("usage: loadclient full|resume|bulk|hold PORT N [--path P] [--expect BYTES] [--suite NAME]");
    const char *mode = argv[1], *path = "/small", *suite = NULL;
    port = atoi(argv[2]);
    long n = atol(argv[3]);
    long long expect = -1;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--path"))
            path = argv[i + 1];
        else if (!strcmp(argv[i], "--expect"))
            expect = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--suite"))
            suite = argv[i + 1];
        else
            die("unknown option");
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set1_groups_list(ctx, "X25519") || (suite && !SSL_CTX_set_ciphersuites(ctx, suite)))
        die("client config");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Sessions are handled here, not by OpenSSL's client cache. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

    int full = !strcmp(mode, "full"), resume = !strcmp(mode, "resume"), bulk = !strcmp(mode, "bulk");
    if (!strcmp(mode, "hold")) {
        SSL **held = calloc((size_t)n, sizeof *held);
        for (long i = 0; i < n; i++)
            held[i] = tls_connect(ctx, NULL);
        printf("HELD n=%ld\n", n);
        fflush(stdout);
        char c;
        while (read(0, &c, 1) > 0)
            ;
        for (long i = 0; i < n; i++) {
            tls_close(held[i]);
        }
        return 0;
    }
    if (!full && !resume && !bulk)
        die("unknown mode");

    SSL_SESSION *sess = NULL;
    if (resume) { /* the first, full handshake: only for its ticket */
        SSL *ssl = tls_connect(ctx, NULL);
        fetch(ssl, path);
        sess = SSL_get1_session(ssl);
        tls_close(ssl);
    }
    long resumed = 0;
    long long body = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        SSL *ssl = tls_connect(ctx, sess);
        long long b = fetch(ssl, path);
        if (expect >= 0 && b != expect)
            die("body of the wrong length");
        body += b;
        resumed += SSL_session_reused(ssl);
        if (resume) { /* the newest ticket for the next connection */
            SSL_SESSION_free(sess);
            sess = SSL_get1_session(ssl);
        }
        tls_close(ssl);
    }
    double secs = now() - t0;
    printf("result mode=%s n=%ld resumed=%ld body=%lld secs=%.6f\n", mode, n, resumed, body, secs);
    SSL_SESSION_free(sess);
    SSL_CTX_free(ctx);
    return 0;
}
