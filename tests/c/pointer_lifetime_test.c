/*
 * The pointers rktls_connection_alpn() and rktls_connection_peer_cert()
 * return stay valid, pointing to the same bytes, until the connection is
 * freed: here across a TLS 1.2 client's renegotiating ClientHello (which
 * rktls refuses, ending the connection) and after the peer has gone. Run it
 * under valgrind and built with -fsanitize=address: a dangling pointer is a
 * heap-use-after-free there.
 *
 * The client is OpenSSL (TLS 1.2, ALPN "http/1.1", a client certificate),
 * in a thread over a socketpair; the server is rktls in fd mode.
 *
 *   pointer_lifetime_test CERTDIR
 *
 * Prints "ok" lines and exits 0, or "FAIL ..." and exits 1.
 */
#include <rktls.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)
#define CHECK_OK(r, what) CHECK((r) == RKTLS_OK, "%s: %s (%u)", what, rktls_result_str(r), (r))

static char cert_path[512], key_path[512], ca_path[512], client_cert[512], client_key[512];

struct client_args {
    int fd;
    int renegotiation_sent;
};

/* OpenSSL TLS 1.2 client: handshake, one request, then a renegotiating
 * ClientHello; reads until the server ends the connection. */
static void *client_main(void *arg)
{
    struct client_args *a = arg;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    CHECK(ctx != NULL, "SSL_CTX_new");
    CHECK(SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1, "min version");
    CHECK(SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) == 1, "max version");
    static const unsigned char alpn[] = "\x08http/1.1";
    CHECK(SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1) == 0, "alpn");
    CHECK(SSL_CTX_use_certificate_file(ctx, client_cert, SSL_FILETYPE_PEM) == 1, "client cert");
    CHECK(SSL_CTX_use_PrivateKey_file(ctx, client_key, SSL_FILETYPE_PEM) == 1, "client key");
    SSL *ssl = SSL_new(ctx);
    CHECK(ssl != NULL, "SSL_new");
    SSL_set_fd(ssl, a->fd);
    CHECK(SSL_connect(ssl) == 1, "SSL_connect");
    CHECK(SSL_write(ssl, "GET /", 5) == 5, "SSL_write");
    CHECK(SSL_renegotiate(ssl) == 1, "SSL_renegotiate");
    /* Sends the ClientHello, then fails on the server's alert or close. */
    (void)SSL_do_handshake(ssl);
    a->renegotiation_sent = 1;
    char buf[256];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
    }
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    shutdown(a->fd, SHUT_RDWR);
    return NULL;
}

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: pointer_lifetime_test CERTDIR");
    snprintf(cert_path, sizeof cert_path, "%s/server.pem", argv[1]);
    snprintf(key_path, sizeof key_path, "%s/server.key", argv[1]);
    snprintf(ca_path, sizeof ca_path, "%s/ca.pem", argv[1]);
    snprintf(client_cert, sizeof client_cert, "%s/client.pem", argv[1]);
    snprintf(client_key, sizeof client_key, "%s/client.key", argv[1]);

    rktls_server_config_builder *b = NULL;
    CHECK_OK(rktls_server_config_builder_new(&b), "builder");
    CHECK_OK(rktls_server_config_builder_add_cert_key_files(b, cert_path, key_path), "cert");
    static const uint8_t alpn[] = "\x02h2\x08http/1.1";
    CHECK_OK(rktls_server_config_builder_set_alpn(b, alpn, sizeof alpn - 1), "alpn");
    CHECK_OK(rktls_server_config_builder_set_client_verify_file(b, ca_path, true), "client CA");
    const rktls_server_config *cfg = NULL;
    CHECK_OK(rktls_server_config_builder_build(b, &cfg), "build");

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    struct client_args args = {.fd = sv[1], .renegotiation_sent = 0};
    pthread_t client;
    CHECK(pthread_create(&client, NULL, client_main, &args) == 0, "pthread_create");

    rktls_connection *conn = NULL;
    CHECK_OK(rktls_server_connection_new(cfg, &conn), "connection");
    CHECK_OK(rktls_connection_set_fd(conn, sv[0]), "set_fd");
    CHECK_OK(rktls_connection_handshake(conn), "handshake");
    CHECK(rktls_connection_protocol_version(conn) == 0x0303, "TLS 1.2");

    const uint8_t *proto = NULL;
    size_t proto_len = 0;
    CHECK_OK(rktls_connection_alpn(conn, &proto, &proto_len), "alpn");
    CHECK(proto_len == 8 && memcmp(proto, "http/1.1", 8) == 0, "negotiated http/1.1");
    const uint8_t *der = NULL;
    size_t der_len = 0;
    CHECK_OK(rktls_connection_peer_cert(conn, 0, &der, &der_len), "peer cert");
    CHECK(der_len > 16 && der[0] == 0x30, "client certificate DER");
    uint8_t *der_copy = malloc(der_len);
    CHECK(der_copy != NULL, "malloc");
    memcpy(der_copy, der, der_len);
    printf("ok   handshake: ALPN and client certificate pointers taken\n");

    char buf[256];
    size_t n = 0;
    rktls_result r;
    size_t got = 0;
    while ((r = rktls_connection_read(conn, (uint8_t *)buf, sizeof buf, &n)) == RKTLS_OK)
        got += n;
    CHECK(got == 5, "request read before the renegotiation (%zu bytes)", got);
    CHECK(r == RKTLS_ERR_RENEGOTIATION, "renegotiation refused: %s (%u)", rktls_result_str(r), r);
    pthread_join(client, NULL);
    CHECK(args.renegotiation_sent, "client sent its renegotiating ClientHello");
    printf("ok   renegotiation refused, connection ended\n");

    /* The connection has ended: the pointers must still hold the bytes. */
    CHECK(memcmp(proto, "http/1.1", 8) == 0, "ALPN bytes after the connection ended");
    CHECK(memcmp(der, der_copy, der_len) == 0, "certificate bytes after the connection ended");
    const uint8_t *proto2 = NULL;
    size_t len2 = 0;
    CHECK_OK(rktls_connection_alpn(conn, &proto2, &len2), "alpn again");
    CHECK(proto2 == proto && len2 == proto_len, "the same ALPN pointer");
    CHECK_OK(rktls_connection_peer_cert(conn, 0, &proto2, &len2), "peer cert again");
    CHECK(proto2 == der && len2 == der_len, "the same certificate pointer");
    printf("ok   pointers still valid and unchanged after the connection ended\n");

    free(der_copy);
    rktls_connection_free(conn);
    rktls_server_config_free(cfg);
    close(sv[0]);
    close(sv[1]);
    printf("3 passed, 0 failed\n");
    return 0;
}
