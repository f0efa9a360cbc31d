/*
 * iis_peer: a TLS 1.2 HTTP server (OpenSSL) that behaves like Microsoft IIS
 * when it wants a client certificate after the handshake: it sends part of
 * its response, then a HelloRequest (renegotiation), and resets the TCP
 * connection when the client answers with anything, such as the
 * no_renegotiation alert rustls sends.
 *
 *   iis_peer --cert FILE --key FILE [--tolerant]
 *
 * --tolerant: after the client's answer, send the rest of the response,
 * close_notify, and close cleanly (a server that accepts the refusal).
 *
 * Serves one connection. Prints "READY port=N" once listening on an
 * ephemeral loopback port, then what happens, one line each:
 *   sent N bytes before the HelloRequest
 *   HelloRequest sent
 *   received alert level=L desc=D       (IIS mode: the client's answer)
 *   client answered with record type T  (tolerant mode)
 *   reset the connection | closed cleanly after N more bytes
 * Build: cc iis_peer.c -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PART 1000 /* body bytes before, and after, the HelloRequest */

static int conn_fd = -1;

static void die(const char *what)
{
    fprintf(stderr, "iis_peer: %s failed\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

/* What IIS does: a TCP reset (SO_LINGER 0, then close), at once. */
static void reset_and_exit(void)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(conn_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(conn_fd);
    printf("reset the connection\n");
    fflush(stdout);
    exit(0);
}

/* Called by OpenSSL for every protocol message, before it acts on it: an
 * alert from the client is reported, then answered with a reset (OpenSSL
 * itself would answer a no_renegotiation warning with a fatal alert). */
static void on_message(int write_p, int version, int content_type, const void *buf, size_t len,
                       SSL *ssl, void *arg)
{
    (void)version, (void)ssl, (void)arg;
    if (write_p || content_type != SSL3_RT_ALERT || len != 2)
        return;
    const unsigned char *a = buf;
    printf("received alert level=%d desc=%d\n", a[0], a[1]);
    reset_and_exit();
}

static void write_all(SSL *ssl, const char *buf, int len)
{
    if (SSL_write(ssl, buf, len) != len)
        die("SSL_write");
}

/* Read exactly n raw bytes from the socket (past OpenSSL). */
static int read_raw(unsigned char *buf, size_t n)
{
    size_t have = 0;
    while (have < n) {
        ssize_t r = read(conn_fd, buf + have, n - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *cert = NULL, *key = NULL;
    int tolerant = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tolerant"))
            tolerant = 1;
        else if (!strcmp(argv[i], "--cert") && i + 1 < argc)
            cert = argv[++i];
        else if (!strcmp(argv[i], "--key") && i + 1 < argc)
            key = argv[++i];
        else
            cert = NULL, i = argc;
    }
    if (!cert || !key) {
        fprintf(stderr, "usage: iis_peer --cert FILE --key FILE [--tolerant]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION))
        die("TLS 1.2 context");
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        die("certificate and key");

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 1) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) != 0)
        die("listen");
    printf("READY port=%d\n", ntohs(sa.sin_port));

    conn_fd = accept(ls, NULL, NULL);
    if (conn_fd < 0)
        die("accept");
    close(ls);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, conn_fd);
    if (SSL_accept(ssl) != 1)
        die("handshake");

    /* The request, up to its blank line. */
    char req[4096];
    size_t have = 0;
    while (!memmem(req, have, "\r\n\r\n", 4)) {
        int n = SSL_read(ssl, req + have, (int)(sizeof req - have));
        if (n <= 0 || (have += (size_t)n) == sizeof req)
            die("reading the request");
    }

    char head[256], body[PART];
    int hl = snprintf(head, sizeof head,
                      "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
                      2 * PART);
    for (int i = 0; i < PART; i++)
        body[i] = (char)('a' + i % 26);
    write_all(ssl, head, hl);
    write_all(ssl, body, PART);
    printf("sent %d bytes before the HelloRequest\n", hl + PART);

    /* Ask for renegotiation: the server sends HelloRequest and goes on. */
    if (SSL_renegotiate(ssl) != 1 || SSL_do_handshake(ssl) != 1)
        die("sending HelloRequest");
    printf("HelloRequest sent\n");

    if (!tolerant) {
        SSL_set_msg_callback(ssl, on_message);
        char buf[256];
        int n = SSL_read(ssl, buf, sizeof buf);
        printf("SSL_read returned %d without an alert\n", n);
        reset_and_exit();
    }

    /* Tolerant: take the client's answer off the socket unread by OpenSSL
     * (which would treat a no_renegotiation warning as fatal), carry on. */
    unsigned char hdr[5], rec[18432];
    if (read_raw(hdr, 5) != 0 || read_raw(rec, (size_t)(hdr[3] << 8 | hdr[4])) != 0)
        die("reading the client's answer");
    printf("client answered with record type %d\n", hdr[0]);
    write_all(ssl, body, PART);
    SSL_shutdown(ssl); /* our close_notify */
    shutdown(conn_fd, SHUT_WR);
    while (read(conn_fd, rec, sizeof rec) > 0) /* the client's close_notify, then FIN */
        ;
    close(conn_fd);
    printf("closed cleanly after %d more bytes\n", PART);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return 0;
}
