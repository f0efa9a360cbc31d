/*
 * Control records on a real kernel (run in the kTLS VM): each case runs an
 * offloaded rktls server against an rktls client over loopback TCP in one
 * process. The client is in userspace, or offloaded too when it must send
 * raw records (sendmsg with TLS_SET_RECORD_TYPE, as any kTLS peer can).
 *
 *   control CERTDIR     prints "ok   ..."/"FAIL ..." lines, then
 *                       "control: N passed, M failed"
 */
#include <rktls.h>

#include "records.h"

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/utsname.h>
#include <unistd.h>


static char cert[512], key[512], ca[512];
static int passed, failed;

static void check(int cond, const char *what)
{
    printf("%s %s\n", cond ? "ok  " : "FAIL", what);
    if (cond)
        passed++;
    else
        failed++;
}

/* One case's setup. */
struct opts {
    uint32_t server_dirs;  /* 0: both */
    uint16_t version;      /* 0x0303 or 0x0304 */
    int client_offloaded;  /* client in the kernel too */
    uint64_t key_limit;    /* server's records per key (0: the suite's) */
};

struct pair {
    rktls_connection *s, *c;
    int sfd, cfd;
};

static int connect_pair(const struct opts *o, struct pair *p)
{
    rktls_server_config_builder *sb;
    const rktls_server_config *scfg;
    rktls_server_config_builder_new(&sb);
    rktls_server_config_builder_add_cert_key_files(sb, cert, key);
    rktls_server_config_builder_set_ktls(sb, RKTLS_KTLS_REQUIRE);
    uint16_t v = o->version;
    rktls_server_config_builder_set_versions(sb, &v, 1);
    if (o->server_dirs)
        rktls_server_config_builder_set_ktls_directions(sb, o->server_dirs);
    if (o->key_limit)
        rktls_server_config_builder_set_key_limit(sb, o->key_limit);
    if (rktls_server_config_builder_build(sb, &scfg) != RKTLS_OK)
        return -1;
    rktls_client_config_builder *cb;
    const rktls_client_config *ccfg;
    rktls_client_config_builder_new(&cb);
    rktls_client_config_builder_add_roots_file(cb, ca);
    if (o->client_offloaded)
        rktls_client_config_builder_set_ktls(cb, RKTLS_KTLS_REQUIRE);
    rktls_client_config_builder_build(cb, &ccfg);

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
    return 0;
}

static void *server_handshake(void *arg)
{
    struct pair *p = arg;
    return (void *)(intptr_t)rktls_connection_handshake(p->s);
}

/* Connect and handshake both ends (the server in a thread). */
static int handshake(const struct opts *o, struct pair *p)
{
    if (connect_pair(o, p) != 0)
        return -1;
    pthread_t t;
    pthread_create(&t, NULL, server_handshake, p);
    rktls_result rc = rktls_connection_handshake(p->c);
    void *rs;
    pthread_join(t, &rs);
    if (rc != RKTLS_OK || (rktls_result)(intptr_t)rs != RKTLS_OK) {
        printf("handshake: client %s, server %s\n", rktls_result_str(rc),
               rktls_result_str((rktls_result)(intptr_t)rs));
        return -1;
    }
    return 0;
}

static void done(struct pair *p)
{
    rktls_connection_free(p->s);
    rktls_connection_free(p->c);
    close(p->sfd);
    close(p->cfd);
}





/* The connection's error message (static buffer, for diagnostics). */
static const char *errmsg(const rktls_connection *c)
{
    static char m[512];
    size_t l = 0;
    m[0] = 0;
    rktls_connection_error_message(c, m, sizeof m, &l);
    return m;
}

static int kernel_can_rekey(void)
{
    struct utsname u;
    int major = 0, minor = 0;
    uname(&u);
    sscanf(u.release, "%d.%d", &major, &minor);
    return major > 6 || (major == 6 && minor >= 14);
}

static void directions(void)
{
    static const struct {
        uint32_t dirs;
        const char *name;
    } cases[] = {{RKTLS_KTLS_TX, "TX only"}, {RKTLS_KTLS_RX, "RX only"},
                 {RKTLS_KTLS_TX | RKTLS_KTLS_RX, "TX and RX"}};
    static char up[300000], down[300000], got[300000];
    for (size_t i = 0; i < sizeof up; i++) {
        up[i] = (char)(i * 7);
        down[i] = (char)(i * 13 + 1);
    }
    for (int v = 0; v < 2; v++) {
        for (size_t k = 0; k < 3; k++) {
            struct opts o = {.server_dirs = cases[k].dirs, .version = v ? 0x0304 : 0x0303};
            struct pair p;
            char what[128];
            snprintf(what, sizeof what, "TLS 1.%d %s: echo 300 KB each way, getters agree",
                     v ? 3 : 2, cases[k].name);
            if (handshake(&o, &p) != 0) {
                check(0, what);
                continue;
            }
            size_t n;
            int ok = write_all(p.c, up, sizeof up) == 0 &&
                     read_upto(p.s, got, sizeof up, &n) == RKTLS_OK && !memcmp(got, up, n) &&
                     write_all(p.s, down, sizeof down) == 0 &&
                     read_upto(p.c, got, sizeof down, &n) == RKTLS_OK && !memcmp(got, down, n);
            ok = ok && rktls_connection_ktls_tx(p.s) == !!(cases[k].dirs & RKTLS_KTLS_TX) &&
                 rktls_connection_ktls_rx(p.s) == !!(cases[k].dirs & RKTLS_KTLS_RX);
            /* close_notify both ways */
            ok = ok && rktls_connection_shutdown(p.s) == RKTLS_OK &&
                 read_upto(p.c, got, 1, &n) == RKTLS_CLOSED &&
                 rktls_connection_shutdown(p.c) == RKTLS_OK &&
                 read_upto(p.s, got, 1, &n) == RKTLS_CLOSED;
            check(ok, what);
            done(&p);
        }
    }
}

/* The client (userspace) updates its keys after "before": rustls asks for
 * ours too. */
static void peer_key_update(uint32_t dirs, const char *what_fmt)
{
    int rekey = kernel_can_rekey();
    check(rktls_ktls_can_rekey() == rekey, rekey ? "probe: this kernel can rekey"
                                                 : "probe: this kernel cannot rekey");
    struct opts o = {.server_dirs = dirs, .version = 0x0304};
    struct pair p;
    char what[200];
    snprintf(what, sizeof what, what_fmt, rekey ? "can" : "cannot");
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    char got[64];
    size_t n;
    int ok = write_all(p.c, "before", 6) == 0 &&
             rktls_connection_refresh_keys(p.c, true) == RKTLS_OK &&
             write_all(p.c, "after", 5) == 0;
    ok = ok && read_upto(p.s, got, 6, &n) == RKTLS_OK && !memcmp(got, "before", 6);
    rktls_result r = read_upto(p.s, got, 5, &n);
    int rx_user = (dirs & RKTLS_KTLS_RX_NEEDS_REKEY) && !rekey;
    if (rekey) {
        ok = ok && r == RKTLS_OK && !memcmp(got, "after", 5);
        /* Our answer to update_requested went out under new TX keys. */
        size_t wn = 0;
        ok = ok && rktls_connection_write(p.s, (const uint8_t *)"x", 1, &wn) == RKTLS_OK &&
             read_upto(p.c, got, 1, &n) == RKTLS_OK && got[0] == 'x';
        ok = ok && rktls_connection_ktls_rx(p.s);
    } else {
        /* The KeyUpdate asks for ours, which needs new TX keys this kernel
         * cannot install (whether RX is in the kernel or here): the peer
         * gets internal_error (under the current TX key), not "after". */
        uint8_t a = 0, pa = 0;
        rktls_connection_alert_sent(p.s, &a);
        rktls_result cr = read_upto(p.c, got, 1, &n);
        rktls_connection_alert_received(p.c, &pa);
        ok = ok && r == RKTLS_ERR_KTLS_NO_REKEY && a == 80 && cr == RKTLS_ERR_ALERT_RECEIVED &&
             pa == 80 && rktls_connection_ktls_tx(p.s) && rktls_connection_ktls_rx(p.s) == !rx_user;
        if (!ok)
            printf("  peer read: %s, alert %u\n", rktls_result_str(cr), pa);
    }
    if (!ok)
        printf("  read after update: %s\n", rktls_result_str(r));
    check(ok, what);
    done(&p);
}

/* Both ends offloaded; the client sends a raw record the server must
 * refuse with `alert` and `code`, after delivering "hello". */
static void raw_record(uint16_t version, uint8_t type, const uint8_t *rec, size_t len,
                       rktls_result code, uint8_t alert, const char *what)
{
    struct opts o = {.version = version, .client_offloaded = 1};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    char got[64];
    size_t n;
    int ok = write_all(p.c, "hello", 5) == 0 && send_record(p.cfd, type, rec, len) == 0;
    ok = ok && read_upto(p.s, got, 5, &n) == RKTLS_OK && !memcmp(got, "hello", 5);
    rktls_result r = read_upto(p.s, got, 1, &n);
    uint8_t sent = 0, recvd = 0;
    rktls_connection_alert_sent(p.s, &sent);
    rktls_connection_alert_received(p.s, &recvd);
    ok = ok && r == code && (alert ? sent == alert : recvd == rec[1]);
    if (alert) {
        /* The alert reached the peer through the kernel. */
        uint8_t buf[20000];
        size_t m = 0;
        int t;
        while ((t = recv_record(p.cfd, buf, sizeof buf, &m)) == 22)
            ; /* session tickets */
        ok = ok && t == 21 && m == 2 && buf[0] == 2 && buf[1] == alert;
    }
    if (!ok)
        printf("  got %s, alert sent %u received %u\n", rktls_result_str(r), sent, recvd);
    check(ok, what);
    done(&p);
}

/* An offloaded client that wrote after its last read (an echo) while the
 * server ends the connection first (vm-bugs.md #1): with close_notify, the
 * client's read returns RKTLS_CLOSED and the server receives the client's
 * close_notify; with a bare TCP close (what openssl s_server does when its
 * stdin ends: it closes the socket before SSL_shutdown), the read returns
 * RKTLS_ERR_TRUNCATED. A read that blocked would time out (SO_RCVTIMEO) and
 * fail the case instead of hanging it. */
static long tls_stat(const char *name);

static void server_closes_first(uint16_t version, int update)
{
    for (int clean = 1; clean >= 0; clean--) {
        char what[240];
        snprintf(what, sizeof what,
                 "TLS 1.%d offloaded client%s, the server ends first %s -> client read %s",
                 version == 0x0304 ? 3 : 2,
                 update ? " after KeyUpdates both ways (its RX rekeyed)" : "",
                 clean ? "with close_notify" : "by a TCP FIN only",
                 clean ? "RKTLS_CLOSED, its close_notify reaches the server"
                       : "RKTLS_ERR_TRUNCATED");
        struct opts o = {.version = version, .client_offloaded = 1};
        struct pair p;
        if (handshake(&o, &p) != 0) {
            check(0, what);
            continue;
        }
        struct timeval tv = {.tv_sec = 10};
        setsockopt(p.cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(p.sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char got[64];
        size_t n;
        long rx0 = tls_stat("TlsRxRekeyOk");
        int ok = rktls_connection_ktls_tx(p.c) && rktls_connection_ktls_rx(p.c) &&
                 write_all(p.s, "s1\n", 3) == 0 && read_upto(p.c, got, 3, &n) == RKTLS_OK;
        /* As with s_server's UPDATE: the client asks for the server's
         * KeyUpdate, which it reads before "s2". */
        if (update)
            ok = ok && rktls_connection_refresh_keys(p.c, true) == RKTLS_OK;
        ok = ok && write_all(p.c, got, 3) == 0 && read_upto(p.s, got, 3, &n) == RKTLS_OK &&
             !memcmp(got, "s1\n", 3);
        if (update)
            ok = ok && write_all(p.s, "s2\n", 3) == 0 && read_upto(p.c, got, 3, &n) == RKTLS_OK &&
                 write_all(p.c, got, 3) == 0 && read_upto(p.s, got, 3, &n) == RKTLS_OK &&
                 !memcmp(got, "s2\n", 3) &&
                 tls_stat("TlsRxRekeyOk") == rx0 + 2; /* both ends' RX, in the kernel */
        rktls_result cr = RKTLS_OK, sr = RKTLS_OK;
        if (clean) {
            ok = ok && rktls_connection_shutdown(p.s) == RKTLS_OK;
            cr = read_upto(p.c, got, 1, &n);
            sr = read_upto(p.s, got, 1, &n); /* the client's answer */
            ok = ok && cr == RKTLS_CLOSED && sr == RKTLS_CLOSED;
        } else {
            ok = ok && shutdown(p.sfd, SHUT_WR) == 0;
            cr = read_upto(p.c, got, 1, &n);
            ok = ok && cr == RKTLS_ERR_TRUNCATED;
        }
        if (!ok)
            printf("  client read: %s, server read: %s (%s)\n", rktls_result_str(cr),
                   rktls_result_str(sr), errmsg(p.c));
        check(ok, what);
        done(&p);
    }
}

/* The event style: the caller reads records itself and passes them in. */
static void event_style(void)
{
    struct opts o = {.version = 0x0304};
    struct pair p;
    const char *what = "event style: application data, then close_notify -> PEER_CLOSED and "
                       "our close_notify to send";
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    write_all(p.c, "evt", 3);
    rktls_connection_shutdown(p.c);
    uint8_t buf[20000];
    size_t len;
    int seen_data = 0, ok = 1, closed = 0;
    for (int i = 0; i < 10 && !closed; i++) {
        int t = recv_record(p.sfd, buf, sizeof buf, &len);
        if (t < 0) {
            ok = 0;
            break;
        }
        rktls_events *ev = NULL;
        rktls_result r = rktls_connection_process_record(p.s, (uint8_t)t, buf, len, &ev);
        ok = ok && r == RKTLS_OK;
        for (size_t k = 0; k < rktls_events_count(ev); k++) {
            const uint8_t *d;
            size_t dl;
            rktls_events_data(ev, k, &d, &dl);
            switch (rktls_events_type(ev, k)) {
            case RKTLS_EVENT_APPLICATION_DATA:
                seen_data = dl == 3 && !memcmp(d, "evt", 3);
                break;
            case RKTLS_EVENT_PEER_CLOSED:
                closed = 1;
                break;
            case RKTLS_EVENT_SEND_CONTROL:
                ok = ok && rktls_events_record_type(ev, k) == 21 && dl == 2 && d[1] == 0 &&
                     send_record(p.sfd, 21, d, dl) == 0;
                break;
            default:
                break;
            }
        }
        rktls_events_free(ev);
    }
    ok = ok && rktls_connection_control_sent(p.s) == RKTLS_OK;
    size_t n;
    char got[8];
    ok = ok && seen_data && closed && read_upto(p.c, got, 1, &n) == RKTLS_CLOSED;
    check(ok, what);
    done(&p);

    /* A KeyUpdate fed by hand on a kernel that cannot rekey: the error,
     * with the alert to send and CLOSED among the events. */
    if (kernel_can_rekey())
        return;
    if (handshake(&o, &p) != 0) {
        check(0, "event style: KeyUpdate");
        return;
    }
    static const uint8_t ku[] = {24, 0, 0, 1, 0};
    rktls_events *ev = NULL;
    rktls_result r = rktls_connection_process_record(p.s, 22, ku, sizeof ku, &ev);
    size_t count = rktls_events_count(ev);
    ok = r == RKTLS_ERR_KTLS_NO_REKEY && count == 2 &&
         rktls_events_type(ev, 0) == RKTLS_EVENT_SEND_CONTROL &&
         rktls_events_type(ev, 1) == RKTLS_EVENT_CLOSED;
    rktls_events_free(ev);
    check(ok, "event style: KeyUpdate on a kernel without rekey -> RKTLS_ERR_KTLS_NO_REKEY, "
              "alert to send, CLOSED");
    done(&p);
}

/* The client (userspace rktls) writes the raw bytes `wire` on its socket
 * after "hello": the offloaded server's kernel fails to read it (`code`),
 * and the client must receive the fatal alert `alert` (read through the
 * client's own record layer: the bytes that arrived). */
static void kernel_read_failure(uint16_t version, uint32_t dirs, const uint8_t *wire, size_t len,
                                rktls_result code, uint8_t alert, const char *what)
{
    struct opts o = {.version = version, .server_dirs = dirs};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    char got[64];
    size_t n;
    int ok = write_all(p.c, "hello", 5) == 0 && write(p.cfd, wire, len) == (ssize_t)len;
    ok = ok && read_upto(p.s, got, 5, &n) == RKTLS_OK && !memcmp(got, "hello", 5);
    rktls_result r = read_upto(p.s, got, 1, &n);
    rktls_result cr = read_upto(p.c, got, 1, &n);
    uint8_t crecv = 0;
    rktls_connection_alert_received(p.c, &crecv);
    ok = ok && r == code && cr == RKTLS_ERR_ALERT_RECEIVED && crecv == alert;
    if (!ok)
        printf("  server %s, client %s, client received alert %u (%s)\n", rktls_result_str(r),
               rktls_result_str(cr), crecv, errmsg(p.c));
    check(ok, what);
    done(&p);
}

static void kernel_read_failures(void)
{
    static uint8_t junk[5 + 40], big[5 + 0x4801];
    memcpy(junk, "\x17\x03\x03\x00\x28", 5);
    memset(junk + 5, 0x5a, 40);
    memcpy(big, "\x17\x03\x03\x48\x01", 5);
    static const struct {
        uint16_t v;
        uint32_t dirs;
        const char *name;
    } cases[] = {{0x0304, 0, "TLS 1.3"},
                 {0x0303, 0, "TLS 1.2"},
                 {0x0304, RKTLS_KTLS_RX, "TLS 1.3 RX only"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char what[200];
        snprintf(what, sizeof what,
                 "%s: a record that fails to decrypt in the kernel (EBADMSG) -> the peer "
                 "receives bad_record_mac",
                 cases[i].name);
        kernel_read_failure(cases[i].v, cases[i].dirs, junk, sizeof junk, RKTLS_ERR_DECRYPT, 20,
                            what);
        snprintf(what, sizeof what,
                 "%s: a record over 2^14+256 bytes (EMSGSIZE) -> the peer receives "
                 "record_overflow",
                 cases[i].name);
        kernel_read_failure(cases[i].v, cases[i].dirs, big, sizeof big, RKTLS_ERR_PROTOCOL, 22,
                            what);
    }
}

/* Application data between two fragments of a KeyUpdate: unexpected_message,
 * nothing from inside the message delivered. On a rekey kernel the first
 * fragment pauses RX (EKEYEXPIRED) and rktls re-installs the current key. */
static void interleaved(void)
{
    const char *what = "data between two fragments of a KeyUpdate -> unexpected_message on the "
                       "wire, nothing from inside delivered";
    struct opts o = {.version = 0x0304, .client_offloaded = 1};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    static const uint8_t f1[] = {24, 0}, f2[] = {0, 1, 0};
    char got[64];
    size_t n;
    int ok = write_all(p.c, "hello", 5) == 0 && send_record(p.cfd, 22, f1, 2) == 0 &&
             send_record(p.cfd, 23, "inside", 6) == 0 && send_record(p.cfd, 22, f2, 3) == 0;
    ok = ok && read_upto(p.s, got, 5, &n) == RKTLS_OK && !memcmp(got, "hello", 5);
    rktls_result r = read_upto(p.s, got, sizeof got, &n);
    ok = ok && r == RKTLS_ERR_UNEXPECTED_MESSAGE && n == 0;
    uint8_t buf[20000];
    size_t m = 0;
    int t;
    while ((t = recv_record(p.cfd, buf, sizeof buf, &m)) == 22)
        ; /* session tickets */
    ok = ok && t == 21 && m == 2 && buf[0] == 2 && buf[1] == 10;
    if (!ok)
        printf("  server %s after %zu bytes (%s); client record type %d\n", rktls_result_str(r), n,
               errmsg(p.s), t);
    check(ok, what);
    done(&p);
}

/* A counter of /proc/net/tls_stat, or -1. */
static long tls_stat(const char *name)
{
    FILE *f = fopen("/proc/net/tls_stat", "r");
    char k[64];
    long v, found = -1;
    while (f && fscanf(f, "%63s %ld", k, &v) == 2)
        if (!strcmp(k, name))
            found = v;
    if (f)
        fclose(f);
    return found;
}

/* A KeyUpdate in two records (RFC 8446 allows fragmenting it). A rekey
 * kernel pauses RX at the first fragment: rktls gives it the current key
 * back, reads the second fragment, and installs the new key (two RX
 * rekeys). The raw client cannot switch its own key, so its next record
 * (old key) fails to decrypt: bad_record_mac, which shows the new key was
 * in place. Without rekey: RKTLS_ERR_KTLS_NO_REKEY and internal_error. */
static void split_key_update(void)
{
    int rekey = kernel_can_rekey();
    const char *what = rekey ? "KeyUpdate split across two records, rekey kernel: both fragments "
                               "read, new key installed (2 RX rekeys, no error), then the old-key "
                               "record -> bad_record_mac"
                             : "KeyUpdate split across two records, kernel without rekey: "
                               "RKTLS_ERR_KTLS_NO_REKEY, internal_error on the wire";
    struct opts o = {.version = 0x0304, .client_offloaded = 1};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    long ok0 = tls_stat("TlsRxRekeyOk"), err0 = tls_stat("TlsRxRekeyError");
    static const uint8_t f1[] = {24, 0}, f2[] = {0, 1, 0};
    char got[64];
    size_t n;
    int ok = write_all(p.c, "hello", 5) == 0 && send_record(p.cfd, 22, f1, 2) == 0 &&
             send_record(p.cfd, 22, f2, 3) == 0 && write_all(p.c, "old", 3) == 0;
    ok = ok && read_upto(p.s, got, 5, &n) == RKTLS_OK && !memcmp(got, "hello", 5);
    rktls_result r = read_upto(p.s, got, sizeof got, &n);
    uint8_t buf[20000];
    size_t m = 0;
    int t;
    while ((t = recv_record(p.cfd, buf, sizeof buf, &m)) == 22)
        ; /* session tickets */
    uint8_t want = rekey ? 20 : 80;
    ok = ok && r == (rekey ? RKTLS_ERR_DECRYPT : RKTLS_ERR_KTLS_NO_REKEY) && n == 0 && t == 21 &&
         m == 2 && buf[0] == 2 && buf[1] == want;
    if (rekey)
        ok = ok && tls_stat("TlsRxRekeyOk") == ok0 + 2 && tls_stat("TlsRxRekeyError") == err0;
    printf("  server %s (%s); peer got record type %d alert %u; TlsRxRekeyOk %ld -> %ld\n",
           rktls_result_str(r), errmsg(p.s), t, m == 2 ? buf[1] : 0, ok0,
           tls_stat("TlsRxRekeyOk"));
    check(ok, what);
    done(&p);
}

/* sendfile with TX in the kernel to a client that reset the connection:
 * this program keeps SIGPIPE's default disposition (death), so surviving
 * to print the result line is the test. The reset is noticed first (its
 * ECONNRESET taken with SO_ERROR), so TCP's send meets EPIPE and raises
 * SIGPIPE (no MSG_NOSIGNAL); the kernel's TLS layer may then report
 * another errno (printed). */
static void sendfile_after_reset(void)
{
    const char *what = "sendfile (TX in the kernel) to a client that reset the connection: "
                       "RKTLS_ERR_IO, no SIGPIPE (default disposition)";
    struct opts o = {.version = 0x0304};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    char path[] = "/tmp/rktls-sendfile-XXXXXX";
    int f = mkstemp(path);
    static char block[1 << 20];
    memset(block, 'f', sizeof block);
    int ok = f >= 0 && write(f, block, sizeof block) == (ssize_t)sizeof block;
    unlink(path);
    int64_t off = 0;
    size_t n = 0;
    ok = ok && rktls_connection_sendfile(p.s, f, &off, 65536, &n) == RKTLS_OK && n > 0;
    char got[1000];
    size_t m;
    ok = ok && read_upto(p.c, got, sizeof got, &m) == RKTLS_OK;
    /* The client resets mid-download. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(p.cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(p.cfd);
    p.cfd = -1;
    struct pollfd pf = {.fd = p.sfd, .events = POLLOUT};
    ok = ok && poll(&pf, 1, 5000) == 1 && (pf.revents & (POLLERR | POLLHUP));
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(p.sfd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    /* The kernel may take bytes once more (the call succeeds, SIGPIPE
     * raised all the same); the next call reports the error. */
    rktls_result r = rktls_connection_sendfile(p.s, f, &off, 65536, &n);
    int e = rktls_connection_errno(p.s);
    ok = ok && soerr == ECONNRESET && r == RKTLS_ERR_IO && e == EPIPE;
    printf("  reset seen as errno %d; sendfile %s errno %d\n", soerr, rktls_result_str(r), e);
    check(ok, what);
    if (f >= 0)
        close(f);
    /* The kernel's own behaviour, documented in the header: close(2)
     * retries the unsent records with sendfile's flags and raises SIGPIPE.
     * Closed here with SIGPIPE blocked, and the pending one taken. */
    sigset_t pipe, pend;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, NULL);
    rktls_connection_free(p.s);
    rktls_connection_free(p.c);
    close(p.sfd);
    sigpending(&pend);
    int raised = sigismember(&pend, SIGPIPE);
    struct timespec zero = {0, 0};
    if (raised)
        sigtimedwait(&pipe, NULL, &zero);
    pthread_sigmask(SIG_UNBLOCK, &pipe, NULL);
    printf("  close(2) of the socket raised SIGPIPE: %s\n", raised ? "yes" : "no");
    check(raised == 1, "close(2) after the reset raises SIGPIPE (kernel behaviour the header "
                       "documents)");
}

/* 40 one-byte records, all received before the server reads: the kernel
 * returns several in one recvmsg. With a limit of 16 records per key the
 * server must see the limit (records counted, not reads): it delivers
 * what the kernel decrypted, then ends with RKTLS_ERR_KEY_EXHAUSTED and a
 * close_notify, on every kernel (the peer never got the time to update). */
static void merged_records_count(void)
{
    const char *what = "40 small records read in fewer than 16 calls count 40 (limit 16): "
                       "RKTLS_ERR_KEY_EXHAUSTED after the data, close_notify to the peer";
    struct opts o = {.version = 0x0304, .client_offloaded = 1, .key_limit = 16};
    struct pair p;
    if (handshake(&o, &p) != 0) {
        check(0, what);
        return;
    }
    int ok = 1;
    for (int i = 0; i < 40 && ok; i++)
        ok = write_all(p.c, "x", 1) == 0;
    char got[20000];
    size_t total = 0, calls = 0, n;
    rktls_result r;
    for (;;) {
        n = 0;
        r = rktls_connection_read(p.s, (uint8_t *)got, sizeof got, &n);
        if (r != RKTLS_OK)
            break;
        total += n;
        calls++;
    }
    ok = ok && r == RKTLS_ERR_KEY_EXHAUSTED && total <= 40 && calls < 16 &&
         read_upto(p.c, got, sizeof got, &n) == RKTLS_CLOSED;
    if (!ok)
        printf("  %zu bytes in %zu reads, then %s (%s)\n", total, calls, rktls_result_str(r),
               errmsg(p.s));
    else
        printf("  %zu bytes in %zu reads\n", total, calls);
    check(ok, what);
    done(&p);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: control CERTDIR\n");
        return 2;
    }
    snprintf(cert, sizeof cert, "%s/server.pem", argv[1]);
    snprintf(key, sizeof key, "%s/server.key", argv[1]);
    snprintf(ca, sizeof ca, "%s/ca.pem", argv[1]);

    directions();
    peer_key_update(0, "peer KeyUpdate, kernel %s rekey: data before it delivered, then "
                       "RKTLS_ERR_KTLS_NO_REKEY and internal_error (or the data after it)");
    peer_key_update(RKTLS_KTLS_TX | RKTLS_KTLS_RX | RKTLS_KTLS_RX_NEEDS_REKEY,
                    "RX_NEEDS_REKEY, kernel %s rekey: a KeyUpdate asking for ours -> data after "
                    "it (rekey) or RKTLS_ERR_KTLS_NO_REKEY, internal_error at the peer (RX here)");
    static const uint8_t fatal[] = {2, 40}, cert_req[] = {13, 0, 0, 0}, nst[] = {4, 0, 0, 0},
                         hello[] = {1, 0, 0, 0}, odd[] = {1, 2, 3};
    raw_record(0x0304, 21, fatal, 2, RKTLS_ERR_ALERT_RECEIVED, 0,
               "fatal alert from the peer: its description, data before it delivered");
    raw_record(0x0303, 21, fatal, 2, RKTLS_ERR_ALERT_RECEIVED, 0,
               "TLS 1.2 fatal alert from the peer");
    raw_record(0x0304, 22, cert_req, 4, RKTLS_ERR_UNEXPECTED_MESSAGE, 10,
               "post-handshake CertificateRequest -> unexpected_message");
    raw_record(0x0304, 22, nst, 4, RKTLS_ERR_UNEXPECTED_MESSAGE, 10,
               "NewSessionTicket sent to a server -> unexpected_message");
    raw_record(0x0303, 22, hello, 4, RKTLS_ERR_RENEGOTIATION, 100,
               "TLS 1.2 renegotiating ClientHello -> no_renegotiation, RKTLS_ERR_RENEGOTIATION");
    raw_record(0x0304, 99, odd, 3, RKTLS_ERR_UNEXPECTED_MESSAGE, 10,
               "unknown record type -> unexpected_message");
    server_closes_first(0x0304, 0);
    server_closes_first(0x0303, 0);
    if (kernel_can_rekey())
        server_closes_first(0x0304, 1);
    event_style();
    kernel_read_failures();
    interleaved();
    split_key_update();
    merged_records_count();
    sendfile_after_reset();
    printf("control: %d passed, %d failed\n", passed, failed);
    return failed != 0;
}
