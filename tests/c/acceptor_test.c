/*
 * C test of the acceptor API: inspect a ClientHello, pick a config by SNI,
 * continue the handshake; on refusal get the alert object and deliver it
 * with rktls_alert_write_fd; misuse gets its own codes.
 *
 *   acceptor_test CERTDIR
 */
#include <rktls.h>

#include "expect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const rktls_server_config *server_cfg(const char *dir, const char *cert, const char *key,
                                             uint16_t version)
{
    char c[512], k[512];
    snprintf(c, sizeof c, "%s/%s", dir, cert);
    snprintf(k, sizeof k, "%s/%s", dir, key);
    rktls_server_config_builder *b = NULL;
    const rktls_server_config *cfg = NULL;
    rktls_server_config_builder_new(&b);
    rktls_server_config_builder_add_cert_key_files(b, c, k);
    if (version)
        rktls_server_config_builder_set_versions(b, &version, 1);
    rktls_server_config_builder_build(b, &cfg);
    return cfg;
}

static const rktls_client_config *client_cfg(const char *dir, uint16_t version)
{
    char ca[512];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    rktls_client_config_builder *b = NULL;
    const rktls_client_config *cfg = NULL;
    rktls_client_config_builder_new(&b);
    rktls_client_config_builder_add_roots_file(b, ca);
    rktls_client_config_builder_set_alpn(b, (const uint8_t *)"\x02h2\x08http/1.1", 12);
    if (version)
        rktls_client_config_builder_set_versions(b, &version, 1);
    rktls_client_config_builder_build(b, &cfg);
    return cfg;
}

/* The client's first flight, as the server would receive it. */
static size_t client_hello(rktls_connection *client, uint8_t *buf, size_t len)
{
    size_t n = 0;
    EXPECT(rktls_connection_handshake(client) == RKTLS_WANT_WRITE, "client has a hello to send");
    rktls_connection_take_tls(client, buf, len, &n);
    return n;
}

static void accept_and_choose(const char *dir)
{
    const rktls_server_config *local = server_cfg(dir, "server.pem", "server.key", 0);
    const rktls_server_config *other = server_cfg(dir, "other.pem", "other.key", 0);
    const rktls_client_config *ccfg = client_cfg(dir, 0);
    rktls_connection *client = NULL;
    rktls_client_connection_new(ccfg, "other.test", &client);
    uint8_t wire[16384];
    size_t n = client_hello(client, wire, sizeof wire), used = 0;

    rktls_acceptor *acc = NULL;
    rktls_accepted *hello = NULL;
    rktls_alert *alert = NULL;
    rktls_acceptor_new(&acc);
    /* Half the hello: need more. */
    EXPECT(rktls_acceptor_feed(acc, wire, n / 2, &used) == RKTLS_OK && used == n / 2, "feed");
    EXPECT(rktls_acceptor_accept(acc, &hello, &alert) == RKTLS_WANT_READ, "need more bytes");
    rktls_acceptor_feed(acc, wire + n / 2, n - n / 2, &used);
    EXPECT(rktls_acceptor_accept(acc, &hello, &alert) == RKTLS_OK && hello, "accepted");
    rktls_accepted *hello2 = NULL;
    EXPECT(rktls_acceptor_accept(acc, &hello2, &alert) == RKTLS_ERR_ALREADY_ACCEPTED &&
               hello2 == NULL,
           "accept after success");
    EXPECT(alert && !rktls_alert_present(alert), "misuse owes the peer no alert");
    rktls_alert_free(alert);
    alert = NULL;

    char sni[64];
    size_t sni_len;
    EXPECT(rktls_accepted_server_name(hello, sni, sizeof sni, &sni_len) == RKTLS_OK &&
               strcmp(sni, "other.test") == 0,
           "SNI is other.test, got %s", sni);
    EXPECT(rktls_accepted_alpn_count(hello) == 2, "two ALPN protocols offered");
    const uint8_t *proto;
    size_t plen;
    EXPECT(rktls_accepted_alpn(hello, 1, &proto, &plen) == RKTLS_OK && plen == 8 &&
               memcmp(proto, "http/1.1", 8) == 0,
           "second ALPN protocol");
    EXPECT(rktls_accepted_alpn(hello, 2, &proto, &plen) == RKTLS_ERR_INVALID_ARGUMENT,
           "ALPN index out of range");
    const uint16_t *items;
    size_t count;
    rktls_accepted_versions(hello, &items, &count);
    EXPECT(count >= 2 && items[0] == 0x0304, "versions offered start with TLS 1.3");
    rktls_accepted_cipher_suites(hello, &items, &count);
    EXPECT(count > 0, "cipher suites offered");
    rktls_accepted_signature_schemes(hello, &items, &count);
    EXPECT(count > 0, "signature schemes offered");

    /* Pick the config by SNI, then finish the handshake in buffer mode. */
    const rktls_server_config *chosen = strcmp(sni, "other.test") == 0 ? other : local;
    rktls_connection *server = NULL;
    EXPECT(rktls_accepted_into_connection(hello, NULL, &server, &alert) ==
               RKTLS_ERR_NULL_ARGUMENT,
           "NULL config");
    EXPECT(alert && !rktls_alert_present(alert), "no alert owed for a caller error");
    rktls_alert_free(alert);
    EXPECT(rktls_accepted_into_connection(hello, chosen, &server, &alert) == RKTLS_OK && server,
           "into_connection");
    rktls_connection *again = NULL;
    EXPECT(rktls_accepted_into_connection(hello, chosen, &again, &alert) ==
                   RKTLS_ERR_HANDLE_CONSUMED &&
               again == NULL,
           "converting twice");
    rktls_alert_free(alert);
    rktls_accepted_free(hello); /* consumed handles are still freed */

    rktls_result rs = RKTLS_WANT_READ, rc = RKTLS_WANT_READ;
    for (int i = 0; i < 10 && (rs != RKTLS_OK || rc != RKTLS_OK); i++) {
        rs = rktls_connection_handshake(server);
        while (rktls_connection_take_tls(server, wire, sizeof wire, &n) == RKTLS_OK && n)
            rktls_connection_feed_tls(client, wire, n, &used);
        rc = rktls_connection_handshake(client);
        while (rktls_connection_take_tls(client, wire, sizeof wire, &n) == RKTLS_OK && n)
            rktls_connection_feed_tls(server, wire, n, &used);
    }
    EXPECT(rs == RKTLS_OK && rc == RKTLS_OK, "handshake: %s / %s", rktls_result_str(rs),
           rktls_result_str(rc));
    rktls_connection_server_name(server, sni, sizeof sni, &sni_len);
    EXPECT(strcmp(sni, "other.test") == 0, "connection keeps the SNI");
    rktls_connection_free(server);
    rktls_connection_free(client);
    rktls_acceptor_free(acc);
    rktls_server_config_free(local);
    rktls_server_config_free(other);
    rktls_client_config_free(ccfg);
}

static void refusal_delivers_alert(const char *dir)
{
    const rktls_server_config *tls13 = server_cfg(dir, "server.pem", "server.key", 0x0304);
    const rktls_client_config *tls12 = client_cfg(dir, 0x0303);
    rktls_connection *client = NULL;
    rktls_client_connection_new(tls12, "localhost", &client);
    uint8_t wire[16384];
    size_t n = client_hello(client, wire, sizeof wire), used;

    rktls_acceptor *acc = NULL;
    rktls_accepted *hello = NULL;
    rktls_alert *alert = NULL;
    rktls_connection *server = NULL;
    rktls_acceptor_new(&acc);
    rktls_acceptor_feed(acc, wire, n, &used);
    EXPECT(rktls_acceptor_accept(acc, &hello, &alert) == RKTLS_OK, "accepted");
    rktls_result r = rktls_accepted_into_connection(hello, tls13, &server, &alert);
    EXPECT(r == RKTLS_ERR_PEER_INCOMPATIBLE && server == NULL, "refused: %s", rktls_result_str(r));
    EXPECT(rktls_alert_present(alert) && rktls_alert_get_level(alert) == 2 &&
               rktls_alert_get_description(alert) == RKTLS_ALERT_PROTOCOL_VERSION,
           "fatal protocol_version alert");
    EXPECT(rktls_alert_pending(alert) == 7, "7 bytes to send in buffer mode");

    /* Deliver it through a socket with the helper; the client reads it. */
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    EXPECT(rktls_alert_write_fd(alert, sv[0]) == RKTLS_OK && rktls_alert_pending(alert) == 0,
           "alert written");
    EXPECT(rktls_alert_write_fd(alert, sv[0]) == RKTLS_OK, "writing again is a no-op");
    n = (size_t)read(sv[1], wire, sizeof wire);
    const uint8_t *bytes;
    size_t len;
    rktls_alert_bytes(alert, &bytes, &len);
    EXPECT(n == len && memcmp(wire, bytes, len) == 0, "the peer got the alert bytes");
    rktls_connection_feed_tls(client, wire, n, &used);
    EXPECT(rktls_connection_handshake(client) == RKTLS_ERR_ALERT_RECEIVED, "client sees alert");
    uint8_t desc = 0;
    EXPECT(rktls_connection_alert_received(client, &desc) && desc == 70, "protocol_version");
    close(sv[0]);
    close(sv[1]);
    rktls_alert_free(alert);
    rktls_accepted_free(hello);
    hello = NULL;
    alert = NULL;

    /* Garbage: accept fails with an alert, then says it already failed. */
    rktls_acceptor *bad = NULL;
    rktls_acceptor_new(&bad);
    const char *http = "GET / HTTP/1.1\r\n\r\n";
    rktls_acceptor_feed(bad, (const uint8_t *)http, strlen(http), &used);
    r = rktls_acceptor_accept(bad, &hello, &alert);
    EXPECT(rktls_result_category(r) == RKTLS_CATEGORY_PROTOCOL && hello == NULL,
           "garbage refused: %s", rktls_result_str(r));
    EXPECT(rktls_alert_present(alert), "alert for garbage");
    rktls_alert_free(alert);
    alert = NULL;
    EXPECT(rktls_acceptor_accept(bad, &hello, &alert) == RKTLS_ERR_ALREADY_FAILED,
           "accept after failure");
    rktls_alert_free(alert);
    rktls_acceptor_free(bad);

    rktls_acceptor_free(acc);
    rktls_connection_free(client);
    rktls_server_config_free(tls13);
    rktls_client_config_free(tls12);
    rktls_alert_free(NULL);
    rktls_accepted_free(NULL);
    rktls_acceptor_free(NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: acceptor_test CERTDIR\n");
        return 2;
    }
    accept_and_choose(argv[1]);
    refusal_delivers_alert(argv[1]);
    return expect_summary();
}
