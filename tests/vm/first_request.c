/*
 * The "first request arrives with the Finished" case: a client puts its
 * Finished and its first request in one TCP segment; the server moves its
 * record layer into the kernel right after the handshake, and its first
 * (kernel) read must return the request intact. The client is a buffer-
 * mode rktls connection, so the test decides exactly what each send holds.
 *
 *   first_request CERTDIR     (in the kTLS VM; prints "first request ok")
 */
#include <rktls.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char REQUEST[] = "GET /first HTTP/1.1\r\nHost: localhost\r\n\r\n";
static const rktls_server_config *scfg;
static int listener;

static void *server(void *arg)
{
    (void)arg;
    int fd = accept(listener, NULL, NULL);
    rktls_connection *s = NULL;
    rktls_server_connection_new(scfg, &s);
    rktls_connection_set_fd(s, fd);
    rktls_result r = rktls_connection_handshake(s);
    char buf[256] = "";
    size_t n = 0;
    if (r == RKTLS_OK)
        r = rktls_connection_read(s, (uint8_t *)buf, sizeof buf - 1, &n);
    int ok = r == RKTLS_OK && n == strlen(REQUEST) && memcmp(buf, REQUEST, n) == 0 &&
             rktls_connection_ktls_rx(s);
    printf("server: %s, ktls=%d/%d, read %zu bytes\n", rktls_result_str(r),
           rktls_connection_ktls_tx(s), rktls_connection_ktls_rx(s), n);
    size_t w;
    rktls_connection_write(s, (const uint8_t *)(ok ? "ok" : "no"), 2, &w);
    rktls_connection_shutdown(s);
    rktls_connection_free(s);
    close(fd);
    return (void *)(intptr_t)ok;
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", argv[1]);
    snprintf(key, sizeof key, "%s/server.key", argv[1]);
    snprintf(ca, sizeof ca, "%s/ca.pem", argv[1]);
    rktls_server_config_builder *sb;
    rktls_server_config_builder_new(&sb);
    rktls_server_config_builder_add_cert_key_files(sb, cert, key);
    rktls_server_config_builder_set_ktls(sb, RKTLS_KTLS_REQUIRE);
    rktls_server_config_builder_build(sb, &scfg);
    rktls_client_config_builder *cb;
    const rktls_client_config *ccfg;
    rktls_client_config_builder_new(&cb);
    rktls_client_config_builder_add_roots_file(cb, ca);
    rktls_client_config_builder_build(cb, &ccfg);

    listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    bind(listener, (struct sockaddr *)&sa, sizeof sa);
    listen(listener, 1);
    getsockname(listener, (struct sockaddr *)&sa, &sl);
    pthread_t t;
    pthread_create(&t, NULL, server, NULL);

    int fd = socket(AF_INET, SOCK_STREAM, 0);
    connect(fd, (struct sockaddr *)&sa, sizeof sa);
    rktls_connection *c = NULL;
    rktls_client_connection_new(ccfg, "localhost", &c);
    static uint8_t wire[65536];
    size_t n, used;
    int combined = 0;
    for (int round = 0; round < 20 && !combined; round++) {
        rktls_result r = rktls_connection_handshake(c);
        if (r == RKTLS_WANT_WRITE && !rktls_connection_is_handshaking(c)) {
            /* Handshake done, Finished still queued: queue the request too,
             * and send both in one write. */
            size_t w = 0;
            rktls_connection_write(c, (const uint8_t *)REQUEST, strlen(REQUEST), &w);
            rktls_connection_take_tls(c, wire, sizeof wire, &n);
            if (send(fd, wire, n, 0) != (ssize_t)n)
                return 1;
            printf("client: sent Finished and request together (%zu bytes)\n", n);
            combined = 1;
        } else if (r == RKTLS_WANT_WRITE) {
            rktls_connection_take_tls(c, wire, sizeof wire, &n);
            if (send(fd, wire, n, 0) != (ssize_t)n)
                return 1;
        } else if (r == RKTLS_WANT_READ) {
            ssize_t got = recv(fd, wire, sizeof wire, 0);
            if (got <= 0)
                return 1;
            rktls_connection_feed_tls(c, wire, (size_t)got, &used);
        } else {
            fprintf(stderr, "client handshake: %s\n", rktls_result_str(r));
            return 1;
        }
    }
    void *ok;
    pthread_join(t, &ok);
    close(fd);
    rktls_connection_free(c);
    printf("%s\n", ok && combined ? "first request ok" : "first request FAILED");
    return !(ok && combined);
}
