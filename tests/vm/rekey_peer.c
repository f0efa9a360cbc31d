/*
 * TLS 1.3 KeyUpdate on a real kernel (run in the kTLS VM, on Debian's 6.12
 * without rekey and on a trixie-backports kernel with it).
 *
 *   rekey_peer server CERTDIR PORT [--dirs tx|rx|txrx|needs] [--key-limit N]
 *                     [--event] [--conns N]
 *       An offloaded rktls echo server on 0.0.0.0:PORT for independent
 *       peers (openssl s_client, gnutls-cli). It echoes what it reads; a
 *       line "UPDATE" (or "update") makes it call
 *       rktls_connection_refresh_keys(conn, true (or false)) after the echo,
 *       "BULK N" makes it send N lines, one record each, and "BYE" makes it
 *       send close_notify and end the connection. After each
 *       connection it prints one line (the probe runs first, printed as
 *       "can_rekey=0|1", so that it is not counted in the deltas):
 *         conn N end=CODE (MESSAGE) bytes=B tx=0|1 rx=0|1 alert_sent=D
 *           RxRekeyOk=+a TxRekeyOk=+b RxRekeyReceived=+c RxRekeyError=+d
 *           TxRekeyError=+e DecryptError=+f
 *       (the /proc/net/tls_stat deltas over the connection).
 *   rekey_peer client CERTDIR HOST PORT [--dirs ...]
 *       An offloaded rktls client, echoing what an openssl s_server sends
 *       (with the same UPDATE commands); connects again until the server
 *       is there (30 s). Prints the same end line.
 *   rekey_peer cases CERTDIR rekey|norekey
 *       In-process cases against the kernel expected (offloaded rktls server,
 *       rktls client): the probe, several KeyUpdates in a row, a KeyUpdate in
 *       the same TCP segment as data, TX-only and RX-only offload with
 *       KeyUpdate both ways, the event style. "ok   ..."/"FAIL ..." lines, then
 *       "rekey cases: N passed, M failed".
 */
#include <rktls.h>

#include "records.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>


static char cert[512], key[512], ca[512];

/* ---- /proc/net/tls_stat ---- */

enum { RX_OK, TX_OK, RX_RECEIVED, RX_ERR, TX_ERR, DECRYPT_ERR, TX_SW, NSTAT };
static const char *stat_names[NSTAT] = {"TlsRxRekeyOk",   "TlsTxRekeyOk",   "TlsRxRekeyReceived",
                                        "TlsRxRekeyError", "TlsTxRekeyError", "TlsDecryptError",
                                        "TlsTxSw"};

static void read_stats(long v[NSTAT])
{
    for (int i = 0; i < NSTAT; i++)
        v[i] = 0;
    FILE *f = fopen("/proc/net/tls_stat", "r");
    if (!f)
        return;
    char name[64];
    long val;
    while (fscanf(f, "%63s %ld", name, &val) == 2)
        for (int i = 0; i < NSTAT; i++)
            if (!strcmp(name, stat_names[i]))
                v[i] = val;
    fclose(f);
}

static void stat_delta(const long a[NSTAT], long d[NSTAT])
{
    long b[NSTAT];
    read_stats(b);
    for (int i = 0; i < NSTAT; i++)
        d[i] = b[i] - a[i];
}

/* ---- configuration ---- */

static uint32_t parse_dirs(const char *s)
{
    if (!strcmp(s, "tx"))
        return RKTLS_KTLS_TX;
    if (!strcmp(s, "rx"))
        return RKTLS_KTLS_RX;
    if (!strcmp(s, "txrx"))
        return RKTLS_KTLS_TX | RKTLS_KTLS_RX;
    if (!strcmp(s, "needs"))
        return RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY;
    fprintf(stderr, "bad --dirs %s\n", s);
    exit(2);
}

static const rktls_server_config *server_config(uint32_t dirs, uint64_t key_limit)
{
    rktls_server_config_builder *b;
    const rktls_server_config *cfg;
    uint16_t v = 0x0304;
    rktls_server_config_builder_new(&b);
    rktls_server_config_builder_add_cert_key_files(b, cert, key);
    rktls_server_config_builder_set_ktls(b, RKTLS_KTLS_REQUIRE);
    rktls_server_config_builder_set_versions(b, &v, 1);
    if (dirs)
        rktls_server_config_builder_set_ktls_directions(b, dirs);
    if (key_limit)
        rktls_server_config_builder_set_key_limit(b, key_limit);
    if (rktls_server_config_builder_build(b, &cfg) != RKTLS_OK) {
        fprintf(stderr, "server config failed\n");
        exit(2);
    }
    return cfg;
}

static const rktls_client_config *client_config(int offloaded, uint32_t dirs)
{
    rktls_client_config_builder *b;
    const rktls_client_config *cfg;
    rktls_client_config_builder_new(&b);
    rktls_client_config_builder_add_roots_file(b, ca);
    if (offloaded)
        rktls_client_config_builder_set_ktls(b, RKTLS_KTLS_REQUIRE);
    if (offloaded && dirs)
        rktls_client_config_builder_set_ktls_directions(b, dirs);
    if (rktls_client_config_builder_build(b, &cfg) != RKTLS_OK) {
        fprintf(stderr, "client config failed\n");
        exit(2);
    }
    return cfg;
}

/* ---- I/O helpers ---- */





static void print_end(int n, rktls_result r, size_t bytes, rktls_connection *c, const long s0[NSTAT])
{
    long d[NSTAT];
    stat_delta(s0, d);
    uint8_t a = 0;
    rktls_connection_alert_sent(c, &a);
    printf("conn %d end=%d (%s) bytes=%zu tx=%d rx=%d alert_sent=%u RxRekeyOk=%+ld TxRekeyOk=%+ld "
           "RxRekeyReceived=%+ld RxRekeyError=%+ld TxRekeyError=%+ld DecryptError=%+ld\n",
           n, (int)r, rktls_result_str(r), bytes, rktls_connection_ktls_tx(c), rktls_connection_ktls_rx(c),
           a, d[RX_OK], d[TX_OK], d[RX_RECEIVED], d[RX_ERR], d[TX_ERR], d[DECRYPT_ERR]);
    fflush(stdout);
}

/* Act on the complete lines of what was just echoed: UPDATE/update, BULK N,
 * BYE (send close_notify and end: RKTLS_CLOSED).
 * (Not "R...": openssl s_client/s_server take a line starting with R as a
 * command.) */
static rktls_result commands(rktls_connection *c, char *line, size_t *ll, const char *d, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (d[i] != '\n') {
            if (*ll < 63)
                line[(*ll)++] = d[i];
            continue;
        }
        line[*ll] = 0;
        *ll = 0;
        if (!strcmp(line, "UPDATE") || !strcmp(line, "update")) {
            rktls_result r = rktls_connection_refresh_keys(c, line[0] == 'U');
            printf("refresh_keys(%s): %d\n", line[0] == 'U' ? "true" : "false", (int)r);
            fflush(stdout);
            /* A refusal (no rekey in this kernel) leaves the connection as it was. */
            if (r != RKTLS_OK && r != RKTLS_ERR_KTLS_NO_REKEY)
                return r;
        } else if (!strcmp(line, "BYE")) {
            rktls_result r = rktls_connection_shutdown(c);
            return r == RKTLS_OK ? RKTLS_CLOSED : r;
        } else if (!strncmp(line, "BULK ", 5)) {
            int count = atoi(line + 5);
            for (int k = 0; k < count; k++) {
                char out[64];
                int len = snprintf(out, sizeof out, "bulk line %03d\n", k);
                int w = write_all(c, out, (size_t)len);
                if (w != 0)
                    return (rktls_result)w;
                rktls_result r;
                while ((r = rktls_connection_flush(c)) == RKTLS_WANT_WRITE)
                    ;
                if (r != RKTLS_OK)
                    return r;
            }
        }
    }
    return RKTLS_OK;
}

/* Echo until the connection ends; the result that ended it. */
static rktls_result echo(rktls_connection *c, size_t *bytes)
{
    static char buf[16384];
    char line[64];
    size_t ll = 0;
    *bytes = 0;
    for (;;) {
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, (uint8_t *)buf, sizeof buf, &n);
        if (r != RKTLS_OK)
            return r;
        if (n == 0) { /* documented never to happen: say so instead of spinning */
            printf("read: RKTLS_OK with 0 bytes\n");
            return RKTLS_ERR_INTERNAL;
        }
        *bytes += n;
        int w = write_all(c, buf, n);
        if (w != 0)
            return (rktls_result)w;
        r = commands(c, line, &ll, buf, n);
        if (r != RKTLS_OK)
            return r;
    }
}

/* The event style: recvmsg here, rktls_connection_process_record for each record. */
static rktls_result echo_events(rktls_connection *c, int fd, size_t *bytes)
{
    static uint8_t buf[20000];
    *bytes = 0;
    for (;;) {
        size_t len = 0;
        int t = recv_record(fd, buf, sizeof buf, &len);
        if (t < 0) {
            printf("  recvmsg: %s\n", strerror(errno));
            return RKTLS_ERR_IO;
        }
        if (len == 0 && t == 23)
            return RKTLS_ERR_TRUNCATED;
        rktls_events *ev = NULL;
        rktls_result r = rktls_connection_process_record(c, (uint8_t)t, buf, len, &ev);
        int sent = 0, closed = 0;
        for (size_t k = 0; k < rktls_events_count(ev); k++) {
            const uint8_t *d;
            size_t dl;
            rktls_events_data(ev, k, &d, &dl);
            switch (rktls_events_type(ev, k)) {
            case RKTLS_EVENT_APPLICATION_DATA:
                *bytes += dl;
                if (write(fd, d, dl) != (ssize_t)dl)
                    r = RKTLS_ERR_IO;
                break;
            case RKTLS_EVENT_SEND_CONTROL:
                printf("event: send control record type %u (%zu bytes)\n",
                       rktls_events_record_type(ev, k), dl);
                if (send_record(fd, rktls_events_record_type(ev, k), d, dl) != 0)
                    r = RKTLS_ERR_IO;
                sent = 1;
                break;
            case RKTLS_EVENT_RX_KEY_UPDATED:
                printf("event: RX key updated\n");
                break;
            case RKTLS_EVENT_TX_KEY_UPDATED:
                printf("event: TX key updated\n");
                break;
            case RKTLS_EVENT_PEER_CLOSED:
            case RKTLS_EVENT_CLOSED:
                closed = 1;
                break;
            default:
                break;
            }
        }
        rktls_events_free(ev);
        if (sent && r == RKTLS_OK)
            r = rktls_connection_control_sent(c);
        fflush(stdout);
        if (r != RKTLS_OK)
            return r;
        if (closed)
            return RKTLS_CLOSED;
    }
}

static int run_server(int argc, char **argv)
{
    int port = atoi(argv[3]), event = 0, conns = 1;
    uint32_t dirs = 0;
    uint64_t limit = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--dirs") && i + 1 < argc)
            dirs = parse_dirs(argv[++i]);
        else if (!strcmp(argv[i], "--key-limit") && i + 1 < argc)
            limit = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--conns") && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--event"))
            event = 1;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    printf("can_rekey=%d\n", rktls_ktls_can_rekey());
    const rktls_server_config *cfg = server_config(dirs, limit);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof sa;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(l, 4) != 0) {
        perror("bind/listen");
        return 1;
    }
    getsockname(l, (struct sockaddr *)&sa, &sl);
    printf("READY port=%d\n", ntohs(sa.sin_port));
    fflush(stdout);
    for (int n = 1; n <= conns; n++) {
        int fd = accept(l, NULL, NULL);
        if (fd < 0)
            return 1;
        long s0[NSTAT];
        read_stats(s0);
        rktls_connection *c;
        rktls_server_connection_new(cfg, &c);
        rktls_connection_set_fd(c, fd);
        size_t bytes = 0;
        rktls_result r = rktls_connection_handshake(c);
        if (r == RKTLS_OK)
            r = event ? echo_events(c, fd, &bytes) : echo(c, &bytes);
        if (r == RKTLS_CLOSED && !event)
            rktls_connection_shutdown(c);
        print_end(n, r, bytes, c, s0);
        rktls_connection_free(c);
        close(fd);
    }
    rktls_server_config_free(cfg);
    return 0;
}

static int run_client(int argc, char **argv)
{
    const char *host = argv[3];
    int port = atoi(argv[4]);
    uint32_t dirs = 0;
    for (int i = 5; i < argc; i++) {
        if (!strcmp(argv[i], "--dirs") && i + 1 < argc)
            dirs = parse_dirs(argv[++i]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    printf("can_rekey=%d\n", rktls_ktls_can_rekey());
    const rktls_client_config *cfg = client_config(1, dirs);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int fd = -1;
    for (int tries = 0; tries < 300; tries++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        close(fd);
        fd = -1;
        usleep(100000);
    }
    if (fd < 0) {
        printf("client: cannot connect to %s:%d\n", host, port);
        return 1;
    }
    long s0[NSTAT];
    read_stats(s0);
    rktls_connection *c;
    rktls_client_connection_new(cfg, "localhost", &c);
    rktls_connection_set_fd(c, fd);
    size_t bytes = 0;
    rktls_result r = rktls_connection_handshake(c);
    if (r == RKTLS_OK)
        r = write_all(c, "hello from rktls\n", 17) == 0 ? echo(c, &bytes) : RKTLS_ERR_IO;
    print_end(1, r, bytes, c, s0);
    rktls_connection_free(c);
    close(fd);
    rktls_client_config_free(cfg);
    return 0;
}

/* ---- in-process cases ---- */

static int passed, failed, rekey;

static void check(int cond, const char *what)
{
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    fflush(stdout);
    if (cond)
        passed++;
    else
        failed++;
}

struct pair {
    rktls_connection *s, *c;
    int sfd, cfd, event;
};

static void *server_handshake(void *arg)
{
    struct pair *p = arg;
    return (void *)(intptr_t)rktls_connection_handshake(p->s);
}

/* Offloaded server with `dirs`, userspace client; both handshaken. */
static int pair_up(struct pair *p, uint32_t dirs)
{
    const rktls_server_config *scfg = server_config(dirs, 0);
    const rktls_client_config *ccfg = client_config(0, 0);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    bind(l, (struct sockaddr *)&sa, sizeof sa);
    listen(l, 1);
    getsockname(l, (struct sockaddr *)&sa, &sl);
    p->cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(p->cfd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    p->sfd = accept(l, NULL, NULL);
    close(l);
    rktls_server_connection_new(scfg, &p->s);
    rktls_client_connection_new(ccfg, "localhost", &p->c);
    rktls_server_config_free(scfg);
    rktls_client_config_free(ccfg);
    rktls_connection_set_fd(p->s, p->sfd);
    rktls_connection_set_fd(p->c, p->cfd);
    pthread_t t;
    pthread_create(&t, NULL, server_handshake, p);
    rktls_result rc = rktls_connection_handshake(p->c);
    void *rs;
    pthread_join(t, &rs);
    if (rc != RKTLS_OK || (rktls_result)(intptr_t)rs != RKTLS_OK) {
        printf("  handshake: client %s, server %s\n", rktls_result_str(rc),
               rktls_result_str((rktls_result)(intptr_t)rs));
        return -1;
    }
    return 0;
}

static void unpair(struct pair *p)
{
    rktls_connection_free(p->s);
    rktls_connection_free(p->c);
    close(p->sfd);
    close(p->cfd);
}

/* The client read fails with the peer's internal_error alert. */
static int client_got_internal_error(struct pair *p)
{
    char b[8];
    size_t n;
    uint8_t a = 0;
    rktls_result r = read_upto(p->c, b, 1, &n);
    rktls_connection_alert_received(p->c, &a);
    if (r != RKTLS_ERR_ALERT_RECEIVED || a != 80)
        printf("  client read: %s, alert %u\n", rktls_result_str(r), a);
    return r == RKTLS_ERR_ALERT_RECEIVED && a == 80;
}

static int stats_are(const long d[NSTAT], long rx_ok, long tx_ok, long rx_recv)
{
    int ok = d[RX_OK] == rx_ok && d[TX_OK] == tx_ok && d[RX_RECEIVED] == rx_recv &&
             d[RX_ERR] == 0 && d[TX_ERR] == 0 && d[DECRYPT_ERR] == 0;
    if (!ok)
        printf("  tls_stat deltas: RxRekeyOk %+ld TxRekeyOk %+ld RxRekeyReceived %+ld "
               "RxRekeyError %+ld TxRekeyError %+ld DecryptError %+ld (want %+ld %+ld %+ld 0 0 0)\n",
               d[RX_OK], d[TX_OK], d[RX_RECEIVED], d[RX_ERR], d[TX_ERR], d[DECRYPT_ERR], rx_ok,
               tx_ok, rx_recv);
    return ok;
}

/* rktls_ktls_can_rekey() in a fresh process: the right answer, one probe
 * (the probe installs one TX state: TlsTxSw +1) for three calls. */
static void probe_once(void)
{
    long s0[NSTAT], d[NSTAT];
    read_stats(s0);
    int a = rktls_ktls_can_rekey(), b = rktls_ktls_can_rekey(), c = rktls_ktls_can_rekey();
    stat_delta(s0, d);
    char what[160];
    snprintf(what, sizeof what, "probe: rktls_ktls_can_rekey() = %s three times, one probe "
             "(TlsTxSw %+ld)", rekey ? "true" : "false", d[TX_SW]);
    check(a == rekey && b == rekey && c == rekey && d[TX_SW] == 1, what);
}

/* The client updates its keys `times` in a row (each asking for ours), then
 * sends "after"; with `cork` the KeyUpdate and the data leave in one TCP
 * segment. */
static void peer_updates(int times, int cork, const char *what)
{
    struct pair p;
    if (pair_up(&p, 0) != 0) {
        check(0, what);
        return;
    }
    long s0[NSTAT], d[NSTAT];
    read_stats(s0);
    char got[64];
    size_t n;
    int on = 1, off = 0;
    int ok = write_all(p.c, "before", 6) == 0 && read_upto(p.s, got, 6, &n) == RKTLS_OK &&
             !memcmp(got, "before", 6);
    if (cork)
        setsockopt(p.cfd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    for (int i = 0; i < times; i++)
        ok = ok && rktls_connection_refresh_keys(p.c, true) == RKTLS_OK;
    ok = ok && write_all(p.c, "after", 5) == 0 && rktls_connection_flush(p.c) == RKTLS_OK;
    if (cork)
        setsockopt(p.cfd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    rktls_result r = read_upto(p.s, got, 5, &n);
    if (rekey) {
        ok = ok && r == RKTLS_OK && !memcmp(got, "after", 5) &&
             write_all(p.s, "reply", 5) == 0 && read_upto(p.c, got, 5, &n) == RKTLS_OK &&
             !memcmp(got, "reply", 5);
        stat_delta(s0, d);
        /* Each update_requested is answered with our own KeyUpdate. */
        ok = ok && stats_are(d, times, times, times);
    } else {
        uint8_t a = 0;
        rktls_connection_alert_sent(p.s, &a);
        ok = ok && r == RKTLS_ERR_KTLS_NO_REKEY && n == 0 && a == 80 &&
             client_got_internal_error(&p);
    }
    if (!ok)
        printf("  server read after the update: %s\n", rktls_result_str(r));
    check(ok, what);
    unpair(&p);
}

/* Offload of one direction only; KeyUpdate from the peer (asking for ours)
 * and from us (asking for the peer's). */
static void one_direction(uint32_t dirs, const char *what)
{
    struct pair p;
    if (pair_up(&p, dirs) != 0) {
        check(0, what);
        return;
    }
    long s0[NSTAT], d[NSTAT];
    read_stats(s0);
    char got[64];
    size_t n;
    int tx = dirs == RKTLS_KTLS_TX;
    int ok = rktls_connection_ktls_tx(p.s) == tx && rktls_connection_ktls_rx(p.s) == !tx;
    ok = ok && write_all(p.c, "up0", 3) == 0 && rktls_connection_refresh_keys(p.c, true) == RKTLS_OK &&
         write_all(p.c, "up1", 3) == 0;
    ok = ok && read_upto(p.s, got, 3, &n) == RKTLS_OK && !memcmp(got, "up0", 3);
    rktls_result r = read_upto(p.s, got, 3, &n);
    if (rekey) {
        ok = ok && r == RKTLS_OK && !memcmp(got, "up1", 3);
        /* Our answer to update_requested needs new TX keys. */
        size_t w = 0;
        rktls_result wr = rktls_connection_write(p.s, (const uint8_t *)"dn1", 3, &w);
        ok = ok && wr == RKTLS_OK && read_upto(p.c, got, 3, &n) == RKTLS_OK &&
             !memcmp(got, "dn1", 3);
        /* Now our own update, asking for the peer's. */
        ok = ok && rktls_connection_refresh_keys(p.s, true) == RKTLS_OK &&
             write_all(p.s, "dn2", 3) == 0 && read_upto(p.c, got, 3, &n) == RKTLS_OK &&
             !memcmp(got, "dn2", 3) && write_all(p.c, "up2", 3) == 0 &&
             read_upto(p.s, got, 3, &n) == RKTLS_OK && !memcmp(got, "up2", 3);
        stat_delta(s0, d);
        /* The kernel direction rekeys twice (once each way), the other in userspace. */
        ok = ok && (tx ? stats_are(d, 0, 2, 0) : stats_are(d, 2, 0, 2));
    } else {
        /* No rekey in this kernel: the KeyUpdate asks for ours, which needs
         * new keys in the kernel (TX-only: TX; RX-only: RX). Either way the
         * read returns RKTLS_ERR_KTLS_NO_REKEY after the data before it and
         * the peer receives internal_error (not close_notify, which would
         * claim a clean end). */
        uint8_t a = 0;
        rktls_connection_alert_sent(p.s, &a);
        ok = ok && r == RKTLS_ERR_KTLS_NO_REKEY && n == 0 && a == 80 &&
             client_got_internal_error(&p);
    }
    if (!ok)
        printf("  server read: %s\n", rktls_result_str(r));
    check(ok, what);
    unpair(&p);
}

/* The event style: the peer's KeyUpdate (asking for ours) between two data records. */
static void event_key_update(void)
{
    const char *what = rekey ? "event style: peer KeyUpdate between data -> RX rekeyed, our "
                               "KeyUpdate sent, TX rekeyed after control_sent, data both ways"
                             : "event style: peer KeyUpdate -> RKTLS_ERR_KTLS_NO_REKEY after "
                               "the data before it, peer gets internal_error";
    struct pair p;
    if (pair_up(&p, 0) != 0) {
        check(0, what);
        return;
    }
    long s0[NSTAT], d[NSTAT];
    read_stats(s0);
    int ok = write_all(p.c, "p", 1) == 0 && rktls_connection_refresh_keys(p.c, true) == RKTLS_OK &&
             write_all(p.c, "q", 1) == 0;
    static uint8_t buf[20000];
    char data[8] = {0};
    size_t got = 0;
    int sent_ku = 0, rx_upd = 0, tx_upd = 0;
    rktls_result last = RKTLS_OK;
    for (int i = 0; i < 8 && got < 2 && last == RKTLS_OK; i++) {
        size_t len;
        int t = recv_record(p.sfd, buf, sizeof buf, &len);
        if (t < 0) {
            printf("  recvmsg: %s\n", strerror(errno));
            ok = 0;
            break;
        }
        rktls_events *ev = NULL;
        last = rktls_connection_process_record(p.s, (uint8_t)t, buf, len, &ev);
        int sent = 0;
        for (size_t k = 0; k < rktls_events_count(ev); k++) {
            const uint8_t *dd;
            size_t dl;
            rktls_events_data(ev, k, &dd, &dl);
            switch (rktls_events_type(ev, k)) {
            case RKTLS_EVENT_APPLICATION_DATA:
                if (got + dl <= sizeof data - 1) {
                    memcpy(data + got, dd, dl);
                    got += dl;
                }
                break;
            case RKTLS_EVENT_SEND_CONTROL:
                if (rktls_events_record_type(ev, k) == 22 && dl == 5 && dd[0] == 24)
                    sent_ku++;
                ok = ok && send_record(p.sfd, rktls_events_record_type(ev, k), dd, dl) == 0;
                sent = 1;
                break;
            case RKTLS_EVENT_RX_KEY_UPDATED:
                rx_upd++;
                break;
            case RKTLS_EVENT_TX_KEY_UPDATED:
                tx_upd++;
                break;
            default:
                break;
            }
        }
        rktls_events_free(ev);
        if (sent && last == RKTLS_OK)
            ok = ok && rktls_connection_control_sent(p.s) == RKTLS_OK;
    }
    char r[4];
    size_t n;
    if (rekey) {
        ok = ok && last == RKTLS_OK && got == 2 && !memcmp(data, "pq", 2) && sent_ku == 1 &&
             rx_upd == 1 && tx_upd == 1 && write(p.sfd, "r", 1) == 1 &&
             read_upto(p.c, r, 1, &n) == RKTLS_OK && r[0] == 'r';
        stat_delta(s0, d);
        ok = ok && stats_are(d, 1, 1, 1);
    } else {
        ok = ok && last == RKTLS_ERR_KTLS_NO_REKEY && got == 1 && data[0] == 'p' &&
             client_got_internal_error(&p);
    }
    if (!ok)
        printf("  last %s, data '%s', KeyUpdates sent %d, rx/tx updated %d/%d\n",
               rktls_result_str(last), data, sent_ku, rx_upd, tx_upd);
    check(ok, what);
    unpair(&p);
}

static int run_cases(const char *expect)
{
    rekey = !strcmp(expect, "rekey");
    probe_once(); /* first: one probe per process */
    if (rekey) {
        peer_updates(1, 0, "peer KeyUpdate (update_requested): kernel RX and TX rekeyed, data "
                           "both ways, tls_stat +1/+1/+1");
        peer_updates(3, 0, "3 KeyUpdates in a row from the peer: 3 RX and 3 TX rekeys, data "
                           "after them intact");
        peer_updates(1, 1, "KeyUpdate and data in one TCP segment: data after it intact");
        one_direction(RKTLS_KTLS_TX, "TX-only offload: KeyUpdate both ways (RX in userspace, "
                                     "TX in the kernel: TxRekeyOk +2)");
        one_direction(RKTLS_KTLS_RX, "RX-only offload: KeyUpdate both ways (RX in the kernel: "
                                     "RxRekeyOk +2, TX in userspace)");
    } else {
        peer_updates(1, 0, "peer KeyUpdate: data before it, then RKTLS_ERR_KTLS_NO_REKEY, "
                           "peer gets internal_error");
        peer_updates(3, 0, "3 KeyUpdates in a row: RKTLS_ERR_KTLS_NO_REKEY at the first, "
                           "peer gets internal_error");
        peer_updates(1, 1, "KeyUpdate and data in one TCP segment: RKTLS_ERR_KTLS_NO_REKEY, "
                           "nothing after it delivered, peer gets internal_error");
        one_direction(RKTLS_KTLS_TX, "TX-only offload: peer KeyUpdate asking for ours (no TX "
                                     "rekey here) -> data before it, RKTLS_ERR_KTLS_NO_REKEY, "
                                     "peer gets internal_error");
        one_direction(RKTLS_KTLS_RX, "RX-only offload: peer KeyUpdate -> data before it, "
                                     "RKTLS_ERR_KTLS_NO_REKEY, peer gets internal_error");
    }
    event_key_update();
    printf("rekey cases: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 3) {
        fprintf(stderr, "usage: rekey_peer server CERTDIR PORT [...] | client CERTDIR HOST PORT "
                        "[...] | cases CERTDIR rekey|norekey\n");
        return 2;
    }
    snprintf(cert, sizeof cert, "%s/server.pem", argv[2]);
    snprintf(key, sizeof key, "%s/server.key", argv[2]);
    snprintf(ca, sizeof ca, "%s/ca.pem", argv[2]);
    if (!strcmp(argv[1], "server") && argc >= 4)
        return run_server(argc, argv);
    if (!strcmp(argv[1], "client") && argc >= 5)
        return run_client(argc, argv);
    if (!strcmp(argv[1], "cases") && argc == 4)
        return run_cases(argv[3]);
    fprintf(stderr, "bad arguments\n");
    return 2;
}
