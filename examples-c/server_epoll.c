/*
 * server_epoll: a single-threaded, non-blocking static-file HTTPS server on
 * rktls, in the style of an nginx worker: one epoll loop serves every
 * connection at once.
 *
 *   server_epoll --cert FILE --key FILE [--sni NAME] [--cert F --key F --sni NAME]...
 *                [--port N] [--root DIR] [--ktls off|prefer|require] [--alpn LIST]
 *                [--timeout-ms N] [--drain-ms N] [--stats] [--quiet]
 *                [--workers N] [--ticket-key FILE]... [--redis SOCKET]
 *
 * Several workers or machines: --workers N forks N worker processes that
 * share the listening socket; --ticket-key FILE (repeatable, first one
 * seals; nginx's ssl_session_ticket_key format, `openssl rand 80`) gives
 * every process that reads the same files the same ticket keys, so a client
 * resumes on any of them. SIGHUP rereads the key files (rotation without a
 * restart: "ticket keys: reloaded N" or "ticket keys: reload failed: ..."). --redis SOCKET (in server_epoll_redis, built
 * when hiredis is installed) keeps sessions in the Redis at that Unix
 * socket instead (tickets off), shared by independent processes.
 *
 * Each connection is a small state machine driven by readiness events:
 *
 *   accept     the acceptor reads the ClientHello; its SNI picks the config
 *              (the certificate given with that --sni name, else the first)
 *   alert      a refused client's alert is still being written
 *   handshake  RKTLS_WANT_READ / RKTLS_WANT_WRITE become EPOLLIN / EPOLLOUT
 *   request    reading an HTTP/1.x request head (keep-alive: many per connection)
 *   respond    header with rktls_connection_write, body with
 *              rktls_connection_sendfile (zero-copy once kTLS has the socket);
 *              the connection is corked (rktls_connection_cork), so head,
 *              body and, on the last response, close_notify leave in one send
 *   shutdown   sending close_notify
 *   linger     our side is closed; what the client still sends is read and
 *              dropped for a while so that the kernel does not answer it with a
 *              reset that would destroy our last bytes (the alert, the response).
 *              Skipped, as nginx does, when nothing suggests more is coming: the
 *              client announced its last request (Connection: close) and every
 *              byte it sent was read; then the socket is closed at once.
 *
 * A connection that makes no progress for --timeout-ms (default 10000) in the
 * accept, handshake or request phases, or while a response is blocked, is
 * closed. Lingering is bounded by min(--timeout-ms, 2000).
 * SIGTERM or SIGINT: stop accepting, close idle keep-alive connections with
 * close_notify, let requests in flight finish (for at most --drain-ms,
 * default 5000), then exit 0.
 *
 * Output, one line each, flushed:
 *   READY port=N                               once listening (--port 0: any free port)
 *   handshake ok: VERSION SUITE sni=.. alpn=.. resumed=.. ktls=.. [worker=PID]
 *   request: METHOD PATH STATUS BYTES
 * and exactly one final line per connection:
 *   closed: clean requests=N                   close_notify sent after the last response
 *   rejected at accept|handshake: RESULT: DETAIL [alert sent: NAME | no alert owed]
 *   handshake failed: WHY [alert sent: NAME | none]
 *   connection ended: WHY requests=N           errors, truncation, a vanished peer
 *   timeout: in STATE requests=N
 * With --stats, a "stats: ..." line at exit (peak= is the most connections
 * open at once). --quiet prints only the READY and stats lines (for
 * benchmarks: no per-connection output to measure).
 */
#include "common.h"
#include "workers.h"
#ifdef RKTLS_EXAMPLE_REDIS
#include "redis_cache.h"
static struct redis_cache redis;
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define HAVE_OPENAT2 1
#endif

#define REQ_MAX 8192    /* an HTTP request head must fit */
#define OUT_MAX 1024    /* response head (and small error bodies) */
#define LINGER_MAX_MS 2000
#define LINGER_MAX_BYTES (256 * 1024)
/* Accepts per wake-up of the (level-triggered) listener: at most this many
 * (see accept_new for how many). */
#define ACCEPTS_PER_WAKEUP 64

enum state { ST_ACCEPT, ST_ALERT, ST_HANDSHAKE, ST_REQUEST, ST_RESPOND, ST_SHUTDOWN, ST_LINGER };
static const char *const state_names[] = {"accept",  "alert",    "handshake", "request",
                                          "respond", "shutdown", "linger"};

struct timer_list;

struct conn {
    int fd;
    enum state st;
    uint32_t events;          /* the epoll interest currently registered */
    rktls_acceptor *acc;      /* ST_ACCEPT */
    rktls_alert *alert;       /* ST_ALERT: a refusal's alert still being written */
    rktls_connection *tls;    /* from the handshake until linger */
    uint64_t deadline;        /* ms, CLOCK_MONOTONIC */
    struct timer_list *list;  /* which timer list holds it */
    struct conn *prev, *next; /* in that list, ordered by deadline */
    unsigned requests;        /* responses completed */
    int reported;             /* its final log line has been printed */
    int keep_alive;           /* for the response being sent */
    int client_done;          /* the client announced its last request */
    int drained;              /* the last read left nothing buffered in rktls */
    size_t linger_bytes;
    size_t req_len;
    size_t out_len, out_off;
    int file_fd;
    int64_t file_off, file_end;
    /* Last: the buffers, which conn_new does not zero (9 KiB a connection);
     * req[0..req_len] and out[0..out_len] are written before they are read. */
    char req[REQ_MAX + 1];
    char out[OUT_MAX];
};

/* Every list's entries share one timeout, so appending keeps them sorted:
 * the head is always the next to expire (what nginx's timer tree gives it). */
struct timer_list {
    struct conn *head, *tail;
    uint64_t ms;
};

static struct timer_list active_list, linger_list;
static struct cert_set certs; /* one config per certificate */
static int epfd = -1, listen_fd = -1, sig_fd = -1, root_fd = -1, spare_fd = -1;
static int draining, drain_ms = 5000, quiet;
static char worker_tag[32]; /* " worker=PID" in a --workers child */
static uint64_t drain_deadline;
static unsigned long nconns;
static struct {
    unsigned long accepted, handshakes, rejected, requests, timeouts, ended, peak;
} stats;
/* Distinct addresses tell the listener and the signalfd from connections. */
static char listen_tag, signal_tag;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void logline(const char *fmt, ...)
{
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* The final line of a connection: printed once. */
static void report(struct conn *c, const char *fmt, ...)
{
    if (c->reported)
        return;
    c->reported = 1;
    if (quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
}

/* ---- timers ---------------------------------------------------------------- */

static void timer_remove(struct conn *c)
{
    struct timer_list *l = c->list;
    if (!l)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
    c->list = NULL;
}

/* (Re)start c's timer: it expires l->ms from now. */
static void timer_arm(struct conn *c, struct timer_list *l)
{
    timer_remove(c);
    c->deadline = now_ms() + l->ms;
    c->list = l;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* ---- connection lifetime ---------------------------------------------------- */

static void conn_free(struct conn *c)
{
    timer_remove(c);
    if (c->file_fd >= 0)
        close(c->file_fd);
    rktls_connection_free(c->tls);
    rktls_alert_free(c->alert);
    rktls_acceptor_free(c->acc);
    close(c->fd); /* also removes it from epoll: the fd is not shared */
    free(c);
    nconns--;
}

/* Register interest in exactly `ev` (EPOLLIN or EPOLLOUT). Level-triggered:
 * a socket that stays ready keeps waking us, so nothing is missed. */
static int set_interest(struct conn *c, uint32_t ev)
{
    if (c->events == ev)
        return 0;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
        return -1;
    c->events = ev;
    return 0;
}

/* Describe the last failure of an acceptor-path call, with its alert. */
static void report_rejected(struct conn *c, const char *stage, rktls_result r,
                            const rktls_alert *alert)
{
    char detail[512] = "";
    size_t n = 0;
    rktls_last_error_message(detail, sizeof detail, &n);
    stats.rejected++;
    if (rktls_alert_present(alert))
        report(c, "rejected at %s: %s: %s [alert sent: %s]", stage, rktls_result_str(r), detail,
               rktls_alert_description_str(rktls_alert_get_description(alert)));
    else
        report(c, "rejected at %s: %s: %s [no alert owed]", stage, rktls_result_str(r), detail);
}

static void report_ended(struct conn *c, rktls_result r)
{
    char why[768];
    describe_failure(c->tls, r, why, sizeof why);
    stats.ended++;
    report(c, "connection ended: %s requests=%u", why, c->requests);
}

/* Enter lingering close: the TLS state is no longer needed, so free it now
 * (memory back at once), half-close, and read what the client still sends. */
static void start_linger(struct conn *c)
{
    rktls_connection_free(c->tls);
    c->tls = NULL;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    shutdown(c->fd, SHUT_WR);
    c->st = ST_LINGER;
    timer_arm(c, &linger_list);
}

/* ---- HTTP ------------------------------------------------------------------- */

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* Turn a request target into a path relative to the document root:
 * percent-decoded, query dropped, and refused (-1) if any segment is "." or
 * "..", or it holds a NUL. "/" and ".../" name index.html. */
static int target_to_path(const char *target, size_t len, char *out, size_t outlen)
{
    size_t o = 0;
    if (len == 0 || target[0] != '/')
        return -1;
    for (size_t i = 1; i < len && target[i] != '?' && target[i] != '#'; i++) {
        char ch = target[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hexval(target[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(target[i + 2]) : -1;
            if (lo < 0)
                return -1;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0' || o + 1 >= outlen)
            return -1;
        out[o++] = ch;
    }
    out[o] = '\0';
    /* Check every segment (the raw "%2e%2e" forms were decoded above). */
    for (char *seg = out; seg; ) {
        char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return -1;
        seg = slash ? slash + 1 : NULL;
    }
    if (o == 0 || out[o - 1] == '/') {
        const char *idx = "index.html";
        if (o + strlen(idx) + 1 > outlen)
            return -1;
        strcpy(out + o, idx);
    }
    return 0;
}

/* Open a file beneath the document root. With openat2(RESOLVE_BENEATH) the
 * kernel also refuses symlinks that lead outside it. */
static int open_beneath(const char *rel)
{
#ifdef HAVE_OPENAT2
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY,
                           .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
    long fd = syscall(SYS_openat2, root_fd, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS)
        return (int)fd;
#endif
    return openat(root_fd, rel, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

static const char *content_type(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strcmp(dot, ".html"))
        return "text/html";
    if (dot && !strcmp(dot, ".txt"))
        return "text/plain";
    return "application/octet-stream";
}

/* A complete response in c->out: head plus a short text body. */
static void simple_response(struct conn *c, int status, const char *reason, int keep,
                            const char *extra_header)
{
    char body[128];
    int bl = snprintf(body, sizeof body, "%d %s\n", status, reason);
    c->keep_alive = keep && !draining;
    int n = snprintf(c->out, sizeof c->out,
                     "HTTP/1.1 %d %s\r\nServer: rktls-server_epoll\r\nContent-Type: text/plain\r\n"
                     "Content-Length: %d\r\nConnection: %s\r\n%s\r\n%s",
                     status, reason, bl, c->keep_alive ? "keep-alive" : "close",
                     extra_header ? extra_header : "", body);
    c->out_len = (size_t)n < sizeof c->out ? (size_t)n : sizeof c->out - 1;
    c->out_off = 0;
}

/* Case-insensitive: does the comma-separated header value hold `token`? */
static int has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i + tl <= len; i++)
        if (!strncasecmp(v + i, token, tl) && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + tl == len || v[i + tl] == ' ' || v[i + tl] == ',' || v[i + tl] == '\r'))
            return 1;
    return 0;
}

/* Parse the request head c->req[0..head_len) and prepare the response. */
static void handle_request(struct conn *c, size_t head_len)
{
    char *p = c->req, *end = c->req + head_len;
    char *eol = memchr(p, '\r', head_len);
    char *sp1 = memchr(p, ' ', (size_t)(eol - p));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    c->file_fd = -1;
    c->file_off = c->file_end = 0;
    c->client_done = 0;
    if (!sp1 || !sp2) {
        simple_response(c, 400, "Bad Request", 0, NULL);
        logline("request: - - 400 0");
        return;
    }
    size_t mlen = (size_t)(sp1 - p), tlen = (size_t)(sp2 - sp1 - 1);
    const char *proto = sp2 + 1;
    size_t plen = (size_t)(eol - proto);
    int http11 = plen == 8 && !memcmp(proto, "HTTP/1.1", 8);
    int http10 = plen == 8 && !memcmp(proto, "HTTP/1.0", 8);
    int keep = http11, bad = 0;

    /* Headers: Connection decides keep-alive; a request body is not supported. */
    for (char *line = eol + 2; line < end - 2;) {
        char *le = memchr(line, '\r', (size_t)(end - line));
        char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon) {
            bad = 1;
            break;
        }
        const char *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        size_t nlen = (size_t)(colon - line), vlen = (size_t)(le - v);
        if (nlen == 10 && !strncasecmp(line, "Connection", 10)) {
            if (has_token(v, vlen, "close"))
                keep = 0;
            else if (has_token(v, vlen, "keep-alive"))
                keep = 1;
        } else if ((nlen == 14 && !strncasecmp(line, "Content-Length", 14) &&
                    strtoull(v, NULL, 10) != 0) ||
                   (nlen == 17 && !strncasecmp(line, "Transfer-Encoding", 17))) {
            bad = 1;
        }
        line = le + 2;
    }
    /* HTTP/1.1 with "Connection: close", or HTTP/1.0 without keep-alive: the
     * client sends no further request (RFC 9112, section 9.6). */
    c->client_done = !keep && !bad && (http11 || http10);
    char method[16] = "-";
    snprintf(method, sizeof method, "%.*s", (int)(mlen < 15 ? mlen : 15), p);
    if (bad || (!http11 && !http10)) {
        simple_response(c, bad ? 400 : 505, bad ? "Bad Request" : "HTTP Version Not Supported", 0,
                        NULL);
        logline("request: %s %.*s %d 0", method, (int)(tlen > 200 ? 200 : tlen), sp1 + 1,
                bad ? 400 : 505);
        return;
    }
    int head_only = mlen == 4 && !memcmp(p, "HEAD", 4);
    if (!head_only && !(mlen == 3 && !memcmp(p, "GET", 3))) {
        simple_response(c, 405, "Method Not Allowed", keep, "Allow: GET, HEAD\r\n");
        logline("request: %s %.*s 405 0", method, (int)(tlen > 200 ? 200 : tlen), sp1 + 1);
        return;
    }
    char rel[4096];
    struct stat st;
    int fd = -1;
    if (target_to_path(sp1 + 1, tlen, rel, sizeof rel) == 0)
        fd = open_beneath(rel);
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        simple_response(c, 404, "Not Found", keep, NULL);
        logline("request: %s %.*s 404 0", method, (int)(tlen > 200 ? 200 : tlen), sp1 + 1);
        return;
    }
    c->keep_alive = keep && !draining;
    int n = snprintf(c->out, sizeof c->out,
                     "HTTP/1.1 200 OK\r\nServer: rktls-server_epoll\r\nContent-Type: %s\r\n"
                     "Content-Length: %lld\r\nConnection: %s\r\n\r\n",
                     content_type(rel), (long long)st.st_size,
                     c->keep_alive ? "keep-alive" : "close");
    c->out_len = (size_t)n;
    c->out_off = 0;
    if (head_only) {
        close(fd);
    } else {
        c->file_fd = fd;
        c->file_end = st.st_size;
    }
    logline("request: %s %.*s 200 %lld", method, (int)(tlen > 200 ? 200 : tlen), sp1 + 1,
            head_only ? 0LL : (long long)st.st_size);
}

/* ---- the state machine ------------------------------------------------------ */

enum step { STEP_AGAIN, STEP_WAIT_IN, STEP_WAIT_OUT, STEP_FREE };

static enum step wait_for(rktls_result r)
{
    return r == RKTLS_WANT_WRITE ? STEP_WAIT_OUT : STEP_WAIT_IN;
}

static enum step step_accept(struct conn *c)
{
    rktls_accepted *hello = NULL;
    rktls_alert *alert = NULL;
    rktls_result r = rktls_acceptor_accept(c->acc, &hello, &alert);
    if (rktls_result_category(r) == RKTLS_CATEGORY_WOULD_BLOCK)
        return wait_for(r); /* WANT_WRITE: rktls is writing the alert */
    if (r != RKTLS_OK) {
        report_rejected(c, "accept", r, alert);
        rktls_acceptor_free(c->acc);
        c->acc = NULL;
        /* In fd mode the acceptor has written the alert before reporting
         * the failure (RKTLS_WANT_WRITE until then); ST_ALERT checks. */
        c->alert = alert;
        c->st = ST_ALERT;
        return STEP_AGAIN;
    }
    char sni[256] = "";
    size_t n = 0;
    rktls_accepted_server_name(hello, sni, sizeof sni, &n);
    r = rktls_accepted_into_connection(hello, cert_set_choose(&certs, sni), &c->tls, &alert);
    rktls_accepted_free(hello);
    rktls_acceptor_free(c->acc);
    c->acc = NULL;
    if (r != RKTLS_OK) {
        report_rejected(c, "handshake", r, alert);
        c->alert = alert;
        c->st = ST_ALERT; /* rktls tried once; the rest (if any) is ours to write */
        return STEP_AGAIN;
    }
    c->st = ST_HANDSHAKE;
    return STEP_AGAIN;
}

static enum step step_alert(struct conn *c)
{
    if (rktls_alert_pending(c->alert) > 0) {
        rktls_result r = rktls_alert_write_fd(c->alert, c->fd);
        if (r == RKTLS_WANT_WRITE)
            return STEP_WAIT_OUT;
        if (r != RKTLS_OK)
            return STEP_FREE; /* the peer is gone */
    }
    int owed = rktls_alert_present(c->alert);
    rktls_alert_free(c->alert);
    c->alert = NULL;
    if (!owed)
        return STEP_FREE;
    start_linger(c);
    return STEP_AGAIN;
}

static enum step step_handshake(struct conn *c)
{
    rktls_result r = rktls_connection_handshake(c->tls);
    if (rktls_result_category(r) == RKTLS_CATEGORY_WOULD_BLOCK)
        return wait_for(r);
    if (r != RKTLS_OK) {
        char why[768];
        uint8_t alert;
        describe_failure(c->tls, r, why, sizeof why);
        stats.rejected++;
        int sent = rktls_connection_alert_sent(c->tls, &alert);
        report(c, "handshake failed: %s [alert sent: %s]", why,
               sent ? rktls_alert_description_str(alert) : "none");
        if (r == RKTLS_ERR_IO)
            return STEP_FREE;
        start_linger(c);
        return STEP_AGAIN;
    }
    char sni[256] = "";
    size_t n = 0, alpn_len = 0;
    const uint8_t *alpn = NULL;
    rktls_connection_server_name(c->tls, sni, sizeof sni, &n);
    rktls_connection_alpn(c->tls, &alpn, &alpn_len);
    stats.handshakes++;
    logline("handshake ok: %s %s sni=%s alpn=%.*s resumed=%s ktls=%s%s",
            version_name(rktls_connection_protocol_version(c->tls)),
            rktls_cipher_suite_name(rktls_connection_cipher_suite(c->tls)), sni[0] ? sni : "-",
            (int)(alpn_len ? alpn_len : 1), alpn_len ? (const char *)alpn : "-",
            rktls_connection_is_resumed(c->tls) ? "yes" : "no", ktls_state(c->tls), worker_tag);
    /* Responses are written in pieces (head, body); corked, they leave in one
     * send when step_respond flushes or step_shutdown adds the close_notify.
     * Reading (step_request) sends anything still queued before it waits, so
     * nothing corked is left behind while we wait for the client. */
    rktls_connection_cork(c->tls, true);
    c->st = ST_REQUEST;
    timer_arm(c, &active_list); /* the request head has its own timeout */
    return STEP_AGAIN;
}

static enum step step_request(struct conn *c)
{
    for (;;) {
        /* A complete request head already buffered (pipelining included)? */
        char *hdr_end = c->req_len ? strstr(c->req, "\r\n\r\n") : NULL;
        if (hdr_end) {
            size_t head_len = (size_t)(hdr_end + 4 - c->req);
            handle_request(c, head_len);
            memmove(c->req, c->req + head_len, c->req_len - head_len + 1);
            c->req_len -= head_len;
            c->st = ST_RESPOND;
            timer_arm(c, &active_list);
            return STEP_AGAIN;
        }
        if (c->req_len == REQ_MAX) {
            c->req_len = 0;
            c->req[0] = '\0';
            simple_response(c, 431, "Request Header Fields Too Large", 0, NULL);
            logline("request: - - 431 0");
            c->st = ST_RESPOND;
            return STEP_AGAIN;
        }
        /* Drain rktls until it would block: with level-triggered epoll, bytes
         * it already decrypted would otherwise wait for the next packet. */
        size_t n = 0, room = REQ_MAX - c->req_len;
        rktls_result r = rktls_connection_read(c->tls, (uint8_t *)c->req + c->req_len, room, &n);
        if (r == RKTLS_OK) {
            c->drained = n < room; /* rktls had no more decrypted bytes */
            c->req_len += n;
            c->req[c->req_len] = '\0';
            if (memchr(c->req + c->req_len - n, '\0', n)) { /* NUL bytes: not HTTP */
                c->req_len = 0;
                c->req[0] = '\0';
                simple_response(c, 400, "Bad Request", 0, NULL);
                logline("request: - - 400 0");
                c->st = ST_RESPOND;
                return STEP_AGAIN;
            }
            continue;
        }
        if (rktls_result_category(r) == RKTLS_CATEGORY_WOULD_BLOCK)
            return wait_for(r);
        if (r == RKTLS_CLOSED && c->req_len == 0) {
            c->client_done = c->drained = 1; /* its close_notify: all was read */
            c->st = ST_SHUTDOWN; /* the client is done: answer its close_notify */
            return STEP_AGAIN;
        }
        report_ended(c, r);
        if (r == RKTLS_ERR_IO || r == RKTLS_ERR_TRUNCATED)
            return STEP_FREE;
        start_linger(c); /* an alert went out, or the client's close cut a request */
        return STEP_AGAIN;
    }
}

static enum step step_respond(struct conn *c)
{
    rktls_result r = RKTLS_OK;
    while (c->out_off < c->out_len) {
        size_t n = 0;
        r = rktls_connection_write(c->tls, (const uint8_t *)c->out + c->out_off,
                                   c->out_len - c->out_off, &n);
        if (r != RKTLS_OK)
            goto blocked;
        c->out_off += n;
    }
    while (c->file_fd >= 0 && c->file_off < c->file_end) {
        size_t n = 0;
        r = rktls_connection_sendfile(c->tls, c->file_fd, &c->file_off,
                                      (size_t)(c->file_end - c->file_off), &n);
        if (r != RKTLS_OK)
            goto blocked;
        if (n == 0) { /* the file shrank: Content-Length cannot be honoured */
            stats.ended++;
            report(c, "connection ended: file shrank while being sent requests=%u", c->requests);
            return STEP_FREE;
        }
        timer_arm(c, &active_list); /* progress: a slow reader is not a stalled one */
    }
    /* The last response: shutdown sends it with the close_notify, in one send. */
    int last = !c->keep_alive || draining;
    if (!last && (r = rktls_connection_flush(c->tls)) != RKTLS_OK)
        goto blocked;
    if (c->file_fd >= 0) {
        close(c->file_fd);
        c->file_fd = -1;
    }
    c->requests++;
    stats.requests++;
    if (!last) {
        c->st = ST_REQUEST;
        timer_arm(c, &active_list);
    } else {
        c->st = ST_SHUTDOWN;
    }
    return STEP_AGAIN;
blocked:
    if (rktls_result_category(r) == RKTLS_CATEGORY_WOULD_BLOCK)
        return wait_for(r);
    report_ended(c, r);
    return STEP_FREE;
}

static enum step step_shutdown(struct conn *c)
{
    rktls_result r = rktls_connection_shutdown(c->tls);
    if (rktls_result_category(r) == RKTLS_CATEGORY_WOULD_BLOCK)
        return wait_for(r);
    if (r != RKTLS_OK) {
        report_ended(c, r);
        return STEP_FREE;
    }
    report(c, "closed: clean requests=%u", c->requests);
    /* Lingering (shutdown, then reading until the client's end of file)
     * costs four system calls and a round trip per connection. It protects
     * our last bytes against a reset, which the kernel sends when we close
     * with unread bytes in the socket or when bytes arrive after the close;
     * a reset can make the client drop what it has not read yet. Like nginx,
     * linger only when more input is possible: not when the client announced
     * its last request and everything it sent has been read. (A client that
     * sends its close_notify before reading the response is the case left:
     * its own bytes then meet a reset.) */
    if (c->client_done && c->req_len == 0 && c->drained)
        return STEP_FREE;
    start_linger(c);
    return STEP_AGAIN;
}

static enum step step_linger(struct conn *c)
{
    char sink[16384];
    for (;;) {
        ssize_t n = read(c->fd, sink, sizeof sink);
        if (n > 0) {
            c->linger_bytes += (size_t)n;
            if (c->linger_bytes > LINGER_MAX_BYTES)
                return STEP_FREE;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return STEP_WAIT_IN;
        if (n < 0 && errno == EINTR)
            continue;
        return STEP_FREE; /* end of file, or an error (EIO: a kTLS control record) */
    }
}

/* Run c's state machine until it must wait; `events` are the epoll events
 * that woke it (0 when not woken by epoll). Frees c when it is done. */
static void drive(struct conn *c, uint32_t events)
{
    for (;;) {
        enum step s;
        switch (c->st) {
        case ST_ACCEPT: s = step_accept(c); break;
        case ST_ALERT: s = step_alert(c); break;
        case ST_HANDSHAKE: s = step_handshake(c); break;
        case ST_REQUEST: s = step_request(c); break;
        case ST_RESPOND: s = step_respond(c); break;
        case ST_SHUTDOWN: s = step_shutdown(c); break;
        default: s = step_linger(c); break;
        }
        if (s == STEP_AGAIN)
            continue;
        if (s == STEP_FREE) {
            conn_free(c);
            return;
        }
        /* It wants to wait, but the socket reported an error or a hang-up:
         * the peer vanished, and waiting would spin on the same event. */
        if (events & (EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t el = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
            if (!c->reported)
                stats.ended++;
            report(c, "connection ended: peer vanished in %s (%s) requests=%u",
                   state_names[c->st], err ? strerror(err) : "hang-up", c->requests);
            conn_free(c);
            return;
        }
        if (set_interest(c, s == STEP_WAIT_OUT ? EPOLLOUT : EPOLLIN) != 0) {
            report(c, "connection ended: epoll_ctl: %s requests=%u", strerror(errno), c->requests);
            conn_free(c);
        }
        return;
    }
}

/* ---- listener, signals, main loop ------------------------------------------- */

/* Accept new connections. Accepting until EAGAIN costs a failed accept4 per
 * wake-up, and one new connection per wake-up is the usual case; so, like
 * nginx's default (multi_accept off), accept one, and let the level-triggered
 * listener wake us again if more are queued. When it does at once (it was
 * ready at the previous wake-up too: a burst), accept twice as many each time,
 * up to ACCEPTS_PER_WAKEUP, so a burst is not taken in one at a time. */
static void accept_new(int ready_before)
{
    static int batch = 1;
    batch = !ready_before ? 1 : batch < ACCEPTS_PER_WAKEUP ? 2 * batch : ACCEPTS_PER_WAKEUP;
    for (int i = 0; i < batch && !draining; i++) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Out of descriptors: accept with the spare one and close at
                 * once, rather than leave the listener ready forever. */
                close(spare_fd);
                fd = accept(listen_fd, NULL, NULL);
                if (fd >= 0)
                    close(fd);
                spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                logline("accept: out of file descriptors: dropped a connection");
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return; /* EAGAIN: all taken */
        }
        struct conn *c = malloc(sizeof *c);
        if (c) /* every field zero, but not the buffers (see struct conn) */
            memset(c, 0, offsetof(struct conn, req));
        rktls_result r = c ? rktls_acceptor_new(&c->acc) : RKTLS_ERR_INTERNAL;
        if (r == RKTLS_OK)
            r = rktls_acceptor_set_fd(c->acc, fd);
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        if (r != RKTLS_OK || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) != 0) {
            logline("accept: cannot set up a connection: %s", rktls_result_str(r));
            if (c)
                rktls_acceptor_free(c->acc);
            free(c);
            close(fd);
            continue;
        }
        c->fd = fd;
        c->file_fd = -1;
        c->events = EPOLLIN;
        c->st = ST_ACCEPT;
        nconns++;
        stats.accepted++;
        if (nconns > stats.peak)
            stats.peak = nconns;
        timer_arm(c, &active_list); /* ClientHello and handshake: one deadline */
        drive(c, 0); /* TCP_DEFER_ACCEPT: the ClientHello is (almost always) there */
    }
}

static void start_draining(int sig)
{
    logline("shutdown: signal %d, draining %lu connection(s)", sig, nconns);
    draining = 1;
    drain_deadline = now_ms() + (uint64_t)drain_ms;
    epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL);
    close(listen_fd);
    listen_fd = -1;
    /* Idle keep-alive connections: nothing in flight, say goodbye now. A
     * connection that has not had its first request yet may still send it. */
    struct conn *c = active_list.head;
    for (unsigned long left = nconns; c && left > 0; left--) {
        struct conn *next = c->next;
        if (c->st == ST_REQUEST && c->req_len == 0 && c->requests > 0) {
            c->st = ST_SHUTDOWN;
            drive(c, 0);
        }
        c = next;
    }
}

static void expire_timers(void)
{
    uint64_t now = now_ms();
    while (linger_list.head && linger_list.head->deadline <= now)
        conn_free(linger_list.head); /* its final line was printed already */
    while (active_list.head && active_list.head->deadline <= now) {
        struct conn *c = active_list.head;
        stats.timeouts++;
        report(c, "timeout: in %s requests=%u", state_names[c->st], c->requests);
        conn_free(c);
    }
}

static int next_timeout(void)
{
    uint64_t next = UINT64_MAX, now = now_ms();
    if (active_list.head)
        next = active_list.head->deadline;
    if (linger_list.head && linger_list.head->deadline < next)
        next = linger_list.head->deadline;
    if (draining && drain_deadline < next)
        next = drain_deadline;
    if (next == UINT64_MAX)
        return -1;
    return next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);
}

static void usage(void)
{
    fprintf(stderr, "usage: server_epoll --cert FILE --key FILE [--sni NAME] "
                    "[--cert F --key F --sni NAME]... [--port N] [--root DIR] "
                    "[--ktls off|prefer|require] [--alpn LIST] [--timeout-ms N] [--drain-ms N] "
                    "[--stats] [--quiet] [--workers N] [--ticket-key FILE]... [--redis SOCKET]\n");
    exit(2);
}

static int positive(const char *v)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n <= 0 || n > 86400000)
        usage();
    return (int)n;
}

/* The options every certificate's config shares. */
static uint8_t alpn[256];
static size_t alpn_len;
static int ktls = RKTLS_KTLS_PREFER;
#define MAX_TICKET_KEYS 4
static const char *ticket_keys[MAX_TICKET_KEYS];
static size_t n_ticket_keys;
static const rktls_ticket_keys *shared_keys; /* every config's, reloaded on SIGHUP */

static void apply_options(rktls_server_config_builder *b)
{
    rktls_result r;
    if (alpn_len && (r = rktls_server_config_builder_set_alpn(b, alpn, alpn_len)) != RKTLS_OK)
        die_rktls("alpn", r);
    if ((r = rktls_server_config_builder_set_ktls(b, (uint32_t)ktls)) != RKTLS_OK)
        die_rktls("ktls", r);
    if (shared_keys && (r = rktls_server_config_builder_use_ticket_keys(b, shared_keys)) != RKTLS_OK)
        die_rktls("ticket keys", r);
#ifdef RKTLS_EXAMPLE_REDIS
    if (redis.socket_path && (r = redis_cache_install(b, &redis)) != RKTLS_OK)
        die_rktls("session cache", r);
#endif
}

/* SIGHUP: reread the --ticket-key files into the configs' shared key set;
 * connections being served carry on, the next tickets use the new list. */
static void reload_ticket_keys(void)
{
    if (!shared_keys)
        return;
    rktls_result r = rktls_ticket_keys_set_files(shared_keys, ticket_keys, n_ticket_keys);
    if (r == RKTLS_OK) {
        logline("ticket keys: reloaded %zu%s", n_ticket_keys, worker_tag);
    } else {
        char msg[512];
        size_t n;
        rktls_last_error_message(msg, sizeof msg, &n);
        logline("ticket keys: reload failed: %s%s", msg, worker_tag);
    }
}

int main(int argc, char **argv)
{
    const char *root = ".", *alpn_list = "http/1.1";
    int port = 0, timeout_ms = 10000, want_stats = 0, workers = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stats")) {
            want_stats = 1;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
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
            char *end;
            long p = strtol(v, &end, 10);
            if (*end || p < 0 || p > 65535)
                usage();
            port = (int)p;
        } else if (!strcmp(a, "--root")) {
            root = v;
        } else if (!strcmp(a, "--alpn")) {
            alpn_list = v;
        } else if (!strcmp(a, "--timeout-ms")) {
            timeout_ms = positive(v);
        } else if (!strcmp(a, "--workers")) {
            if ((workers = positive(v)) > WORKERS_MAX)
                usage();
        } else if (!strcmp(a, "--ticket-key")) {
            if (n_ticket_keys == MAX_TICKET_KEYS)
                usage();
            ticket_keys[n_ticket_keys++] = v;
#ifdef RKTLS_EXAMPLE_REDIS
        } else if (!strcmp(a, "--redis")) {
            redis.socket_path = v;
#endif
        } else if (!strcmp(a, "--drain-ms")) {
            drain_ms = positive(v);
        } else if (!strcmp(a, "--ktls")) {
            if ((ktls = ktls_mode(v)) < 0)
                usage();
        } else {
            usage();
        }
    }
    alpn_len = alpn_wire(alpn_list, alpn, sizeof alpn);
    rktls_result kr;
    if (n_ticket_keys &&
        ((kr = rktls_ticket_keys_new(&shared_keys)) != RKTLS_OK ||
         (kr = rktls_ticket_keys_set_files(shared_keys, ticket_keys, n_ticket_keys)) != RKTLS_OK))
        die_rktls("ticket keys", kr);
    if (certs.n == 0 || cert_set_build(&certs, apply_options) != 0)
        usage();
    active_list.ms = (uint64_t)timeout_ms;
    linger_list.ms = (uint64_t)(timeout_ms < LINGER_MAX_MS ? timeout_ms : LINGER_MAX_MS);

    if ((root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        perror(root);
        return 1;
    }
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* accept4 only once the client has sent something (its ClientHello), so
     * the first read after accept finds it instead of EAGAIN and another
     * epoll_wait. After the timeout (seconds) the connection is accepted
     * anyway, and the ClientHello is waited for as usual. */
    int defer_s = timeout_ms / 1000 > 0 ? timeout_ms / 1000 : 1;
    setsockopt(listen_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_s, sizeof defer_s);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(listen_fd, 511) != 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("listen");
        return 1;
    }
    port = ntohs(sa.sin_port);
    if (workers && workers_start(workers)) {
        printf("READY port=%d\n", port); /* even with --quiet */
        fflush(stdout);
        workers_supervise(); /* the parent: never returns */
    }
    if (workers)
        snprintf(worker_tag, sizeof worker_tag, " worker=%d", (int)getpid());
    /* SIGTERM/SIGINT arrive as readable events; SIGPIPE is not wanted
     * (rktls writes with MSG_NOSIGNAL, but sendfile(2) on kTLS cannot). */
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    struct epoll_event le = {.events = EPOLLIN, .data.ptr = &listen_tag};
    struct epoll_event se = {.events = EPOLLIN, .data.ptr = &signal_tag};
    if (sig_fd < 0 || epfd < 0 || spare_fd < 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &le) != 0 ||
        epoll_ctl(epfd, EPOLL_CTL_ADD, sig_fd, &se) != 0) {
        perror("listen");
        return 1;
    }
    if (!workers) {
        printf("READY port=%d\n", port); /* even with --quiet */
        fflush(stdout);
    }

    struct epoll_event evs[256];
    int signalled = 0, listener_ready = 0;
    for (;;) {
        if (draining) {
            if (nconns == 0)
                break;
            if (now_ms() >= drain_deadline) {
                while (active_list.head) {
                    stats.timeouts++;
                    report(active_list.head, "timeout: in %s (shutting down) requests=%u",
                           state_names[active_list.head->st], active_list.head->requests);
                    conn_free(active_list.head);
                }
                while (linger_list.head)
                    conn_free(linger_list.head);
                break;
            }
        }
        int n = epoll_wait(epfd, evs, 256, next_timeout());
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        int ready_before = listener_ready;
        listener_ready = 0;
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &listen_tag) {
                accept_new(ready_before);
                listener_ready = 1;
            } else if (p == &signal_tag) {
                struct signalfd_siginfo si;
                while (read(sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
                    if (si.ssi_signo == SIGHUP)
                        reload_ticket_keys();
                    else
                        signalled = (int)si.ssi_signo;
                }
            } else {
                drive(p, evs[i].events);
            }
        }
        /* After the batch: draining may free connections that later events
         * of the same batch still point to. */
        if (signalled && !draining)
            start_draining(signalled);
        expire_timers();
    }
    if (want_stats) {
        quiet = 0; /* the stats line is printed even with --quiet */
        logline("stats: accepted=%lu handshakes=%lu rejected=%lu requests=%lu timeouts=%lu "
                "ended=%lu peak=%lu",
                stats.accepted, stats.handshakes, stats.rejected, stats.requests, stats.timeouts,
                stats.ended, stats.peak);
    }
    cert_set_free(&certs);
    rktls_ticket_keys_free(shared_keys);
#ifdef RKTLS_EXAMPLE_REDIS
    redis_cache_close(&redis);
#endif
    close(epfd);
    close(sig_fd);
    close(root_fd);
    close(spare_fd);
    if (listen_fd >= 0)
        close(listen_fd);
    return 0;
}
