/*
 * End-to-end C test: an rktls server and an rktls client handshake and echo
 * 1 MiB over loopback, in three ways:
 *   blocking  fd mode, blocking sockets, server in a thread;
 *   epoll     fd mode, non-blocking sockets, both ends in one epoll loop;
 *   buffer    buffer mode: the test moves the TLS bytes itself.
 * Each checks the data byte for byte and the clean close on both sides.
 *
 *   echo_test CERTDIR
 *
 * Ends with "N passed, M failed"; exits non-zero if anything failed.
 */
#include <rktls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOTAL (1024 * 1024)
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)
#define CHECK_OK(r, what) CHECK((r) == RKTLS_OK, "%s: %s (%u)", what, rktls_result_str(r), (r))

static const rktls_server_config *server_cfg;
static const rktls_client_config *client_cfg;
static uint8_t *payload;

static int make_configs(const char *dir)
{
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    rktls_server_config_builder *sb = NULL;
    CHECK_OK(rktls_server_config_builder_new(&sb), "server builder");
    CHECK_OK(rktls_server_config_builder_add_cert_key_files(sb, cert, key), "cert");
    CHECK_OK(rktls_server_config_builder_build(sb, &server_cfg), "server build");
    rktls_client_config_builder *cb = NULL;
    CHECK_OK(rktls_client_config_builder_new(&cb), "client builder");
    CHECK_OK(rktls_client_config_builder_add_roots_file(cb, ca), "roots");
    CHECK_OK(rktls_client_config_builder_build(cb, &client_cfg), "client build");
    return 0;
}

static int listen_loopback(int *port)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl))
        return -1;
    *port = ntohs(sa.sin_port);
    return ls;
}

static int connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    return fd;
}

/* ---- blocking ---------------------------------------------------------- */

static int write_all(rktls_connection *c, const uint8_t *p, size_t len)
{
    while (len) {
        size_t n = 0;
        rktls_result r = rktls_connection_write(c, p, len, &n);
        CHECK_OK(r, "write");
        p += n;
        len -= n;
    }
    CHECK_OK(rktls_connection_flush(c), "flush");
    return 0;
}

static void *blocking_server(void *arg)
{
    int fd = accept(*(int *)arg, NULL, NULL);
    rktls_connection *c = NULL;
    static uint8_t buf[16384];
    intptr_t ok = 0;
    if (rktls_server_connection_new(server_cfg, &c) != RKTLS_OK ||
        rktls_connection_set_fd(c, fd) != RKTLS_OK || rktls_connection_handshake(c) != RKTLS_OK)
        goto out;
    for (;;) {
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, buf, sizeof buf, &n);
        if (r == RKTLS_CLOSED)
            break;
        if (r != RKTLS_OK || write_all(c, buf, n) != 0)
            goto out;
    }
    ok = rktls_connection_shutdown(c) == RKTLS_OK;
out:
    rktls_connection_free(c);
    close(fd);
    return (void *)ok;
}

static int test_blocking(void)
{
    int port, ls = listen_loopback(&port);
    CHECK(ls >= 0, "listen");
    pthread_t t;
    pthread_create(&t, NULL, blocking_server, &ls);
    int fd = connect_loopback(port);
    CHECK(fd >= 0, "connect");
    rktls_connection *c = NULL;
    CHECK_OK(rktls_client_connection_new(client_cfg, "localhost", &c), "client conn");
    CHECK_OK(rktls_connection_set_fd(c, fd), "set_fd");
    CHECK_OK(rktls_connection_handshake(c), "handshake");
    CHECK(rktls_connection_protocol_version(c) == 0x0304, "TLS 1.3 by default");
    static uint8_t back[TOTAL];
    size_t got = 0;
    for (size_t off = 0; off < TOTAL; off += 65536) {
        if (write_all(c, payload + off, 65536))
            return 1;
        while (got < off + 65536) {
            size_t n = 0;
            CHECK_OK(rktls_connection_read(c, back + got, TOTAL - got, &n), "read");
            got += n;
        }
    }
    CHECK(memcmp(back, payload, TOTAL) == 0, "echoed data differs");
    CHECK_OK(rktls_connection_shutdown(c), "shutdown");
    size_t n = 0;
    uint8_t one;
    rktls_result r = rktls_connection_read(c, &one, 1, &n);
    CHECK(r == RKTLS_CLOSED, "expected clean close, got %s", rktls_result_str(r));
    void *server_ok;
    pthread_join(t, &server_ok);
    CHECK(server_ok, "server side failed");
    rktls_connection_free(c);
    close(fd);
    close(ls);
    return 0;
}

/* ---- epoll -------------------------------------------------------------- */

enum phase { HANDSHAKE, DATA, SHUTDOWN, DRAIN, DONE };

struct ep {
    rktls_connection *c;
    int fd, is_client;
    enum phase phase;
    uint8_t *buf; /* client: echoed data; server: data waiting to be echoed */
    size_t len, sent, off;
    uint32_t events;
};

/* Make all the progress possible without blocking; set the events to wait for. */
static int ep_step(struct ep *e)
{
    e->events = 0;
    for (int guard = 0; guard < 100000; guard++) {
        rktls_result r = RKTLS_ERR_INTERNAL;
        size_t n = 0;
        switch (e->phase) {
        case HANDSHAKE:
            r = rktls_connection_handshake(e->c);
            if (r == RKTLS_OK) {
                e->phase = DATA;
                continue;
            }
            break;
        case DATA:
            if (e->is_client && e->sent < TOTAL) {
                r = rktls_connection_write(e->c, payload + e->sent, TOTAL - e->sent, &n);
                e->sent += n;
                if (r != RKTLS_OK && r != RKTLS_WANT_WRITE)
                    break;
                if (r == RKTLS_WANT_WRITE)
                    e->events |= EPOLLOUT;
            }
            if (!e->is_client && e->off < e->len) {
                r = rktls_connection_write(e->c, e->buf + e->off, e->len - e->off, &n);
                e->off += n;
                if (e->off == e->len)
                    e->off = e->len = 0;
                if (r != RKTLS_OK && r != RKTLS_WANT_WRITE)
                    break;
                if (r == RKTLS_WANT_WRITE) {
                    e->events |= EPOLLOUT;
                    return 0; /* do not read more until the echo drains */
                }
            }
            r = rktls_connection_read(e->c, e->buf + e->len, TOTAL - e->len, &n);
            if (r == RKTLS_OK) {
                e->len += n;
                if (e->is_client && e->len == TOTAL)
                    e->phase = SHUTDOWN;
                continue;
            }
            if (r == RKTLS_CLOSED && !e->is_client) {
                e->phase = SHUTDOWN;
                continue;
            }
            if (r == RKTLS_WANT_READ) {
                if (rktls_connection_flush(e->c) == RKTLS_WANT_WRITE)
                    e->events |= EPOLLOUT;
                e->events |= EPOLLIN;
                return 0;
            }
            break;
        case SHUTDOWN:
            r = rktls_connection_shutdown(e->c);
            if (r == RKTLS_OK) {
                e->phase = e->is_client ? DRAIN : DONE;
                continue;
            }
            break;
        case DRAIN: {
            uint8_t one;
            r = rktls_connection_read(e->c, &one, 1, &n);
            if (r == RKTLS_CLOSED) {
                e->phase = DONE;
                continue;
            }
            CHECK(r != RKTLS_OK, "data after the echo");
            break;
        }
        case DONE:
            return 0;
        }
        if (r == RKTLS_WANT_READ) {
            e->events |= EPOLLIN;
            return 0;
        }
        if (r == RKTLS_WANT_WRITE) {
            e->events |= EPOLLOUT;
            return 0;
        }
        CHECK(0, "%s in phase %d: %s", e->is_client ? "client" : "server", e->phase,
              rktls_result_str(r));
    }
    CHECK(0, "no progress");
}

static int test_epoll(void)
{
    int port, ls = listen_loopback(&port);
    CHECK(ls >= 0, "listen");
    int cfd = connect_loopback(port);
    int sfd = accept(ls, NULL, NULL);
    CHECK(cfd >= 0 && sfd >= 0, "connect/accept");
    /* Small socket buffers, so that writes really meet EAGAIN (not smaller:
     * 4 KiB ones make loopback crawl on delayed ACKs). */
    int small = 16384;
    for (int i = 0; i < 2; i++) {
        int fd = i ? sfd : cfd;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        fcntl(fd, F_SETFL, O_NONBLOCK);
    }
    static uint8_t cbuf[TOTAL], sbuf[TOTAL];
    struct ep eps[2] = {{.fd = cfd, .is_client = 1, .buf = cbuf}, {.fd = sfd, .buf = sbuf}};
    CHECK_OK(rktls_client_connection_new(client_cfg, "localhost", &eps[0].c), "client conn");
    CHECK_OK(rktls_server_connection_new(server_cfg, &eps[1].c), "server conn");
    int epfd = epoll_create1(0);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(rktls_connection_set_fd(eps[i].c, eps[i].fd), "set_fd");
        struct epoll_event ev = {.events = 0, .data.ptr = &eps[i]};
        epoll_ctl(epfd, EPOLL_CTL_ADD, eps[i].fd, &ev);
        if (ep_step(&eps[i]))
            return 1;
    }
    int wants_read = 0, wants_write = 0;
    while (eps[0].phase != DONE || eps[1].phase != DONE) {
        for (int i = 0; i < 2; i++) {
            struct epoll_event ev = {.events = eps[i].events, .data.ptr = &eps[i]};
            epoll_ctl(epfd, EPOLL_CTL_MOD, eps[i].fd, &ev);
            wants_read += !!(eps[i].events & EPOLLIN);
            wants_write += !!(eps[i].events & EPOLLOUT);
        }
        struct epoll_event evs[2];
        int n = epoll_wait(epfd, evs, 2, 5000);
        CHECK(n > 0, "epoll_wait timed out (client phase %d, server phase %d)", eps[0].phase,
              eps[1].phase);
        for (int i = 0; i < n; i++)
            if (ep_step(evs[i].data.ptr))
                return 1;
    }
    CHECK(memcmp(cbuf, payload, TOTAL) == 0, "echoed data differs");
    CHECK(wants_read > 0 && wants_write > 0, "never waited (read %d, write %d)", wants_read,
          wants_write);
    printf("epoll: waited %d times for read, %d for write\n", wants_read, wants_write);
    for (int i = 0; i < 2; i++) {
        rktls_connection_free(eps[i].c);
        close(eps[i].fd);
    }
    close(epfd);
    close(ls);
    return 0;
}

/* ---- buffer ------------------------------------------------------------- */

/* Move TLS bytes from one connection to the other; 1 if any moved. */
static int move(rktls_connection *from, rktls_connection *to)
{
    static uint8_t wire[4096];
    int moved = 0;
    size_t n = 0, used;
    while (rktls_connection_take_tls(from, wire, sizeof wire, &n) == RKTLS_OK && n > 0) {
        size_t off = 0;
        while (off < n) {
            if (rktls_connection_feed_tls(to, wire + off, n - off, &used) != RKTLS_OK)
                return -1;
            if (used == 0)
                return -1; /* the receiver must read first; the test never lets this happen */
            off += used;
        }
        moved = 1;
    }
    return moved;
}

static int test_buffer(void)
{
    rktls_connection *c = NULL, *s = NULL;
    CHECK_OK(rktls_client_connection_new(client_cfg, "localhost", &c), "client conn");
    CHECK_OK(rktls_server_connection_new(server_cfg, &s), "server conn");
    rktls_result rc, rs;
    int rounds = 0;
    do {
        rc = rktls_connection_handshake(c);
        CHECK(move(c, s) >= 0, "move");
        rs = rktls_connection_handshake(s);
        CHECK(move(s, c) >= 0, "move");
        CHECK(++rounds < 20, "handshake does not finish: %s / %s", rktls_result_str(rc),
              rktls_result_str(rs));
    } while (rc != RKTLS_OK || rs != RKTLS_OK);
    /* Feeding reports exactly what it consumed, even for odd-sized pieces. */
    static uint8_t back[TOTAL], tmp[16384];
    size_t got = 0;
    for (size_t off = 0; off < TOTAL; off += 8192) {
        size_t n = 0;
        CHECK_OK(rktls_connection_write(c, payload + off, 8192, &n), "write");
        CHECK(n == 8192, "short write %zu", n);
        CHECK(move(c, s) == 1, "client produced no TLS bytes");
        for (;;) {
            rktls_result r = rktls_connection_read(s, tmp, sizeof tmp, &n);
            if (r == RKTLS_WANT_READ)
                break;
            CHECK_OK(r, "server read");
            size_t w = 0;
            CHECK_OK(rktls_connection_write(s, tmp, n, &w), "server write");
            CHECK(w == n, "short echo");
        }
        CHECK(move(s, c) == 1, "server produced no TLS bytes");
        while (got < TOTAL) {
            rktls_result r = rktls_connection_read(c, back + got, TOTAL - got, &n);
            if (r == RKTLS_WANT_READ)
                break;
            CHECK_OK(r, "client read");
            got += n;
        }
    }
    CHECK(got == TOTAL && memcmp(back, payload, TOTAL) == 0, "echo differs (%zu bytes)", got);
    CHECK(rktls_connection_shutdown(c) == RKTLS_WANT_WRITE, "close_notify must be taken");
    CHECK(move(c, s) == 1, "no close_notify");
    CHECK_OK(rktls_connection_shutdown(c), "shutdown after take");
    size_t n = 0;
    CHECK(rktls_connection_read(s, tmp, sizeof tmp, &n) == RKTLS_CLOSED, "server sees close");
    CHECK(rktls_connection_shutdown(s) == RKTLS_WANT_WRITE, "server close_notify queued");
    CHECK(move(s, c) == 1, "no server close_notify");
    CHECK(rktls_connection_read(c, tmp, sizeof tmp, &n) == RKTLS_CLOSED, "client sees close");
    /* Buffer-mode calls are refused in fd mode and vice versa. */
    CHECK(rktls_connection_set_fd(c, 0) == RKTLS_ERR_WRONG_STATE, "set_fd after I/O");
    rktls_connection_free(c);
    rktls_connection_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: echo_test CERTDIR\n");
        return 2;
    }
    payload = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 13);
    if (make_configs(argv[1]))
        return 1;
    struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {{"blocking", test_blocking}, {"epoll", test_epoll}, {"buffer", test_buffer}};
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
        int bad = tests[i].fn();
        printf("%s %s\n", bad ? "FAIL" : "ok  ", tests[i].name);
        bad ? failed++ : passed++;
    }
    rktls_server_config_free(server_cfg);
    rktls_client_config_free(client_cfg);
    free(payload);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
