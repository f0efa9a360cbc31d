/*
 * ngx_http_rktls_module, the connection path: accept -> rktls acceptor on
 * nginx's event loop -> config by SNI -> handshake (and kTLS) -> nginx's
 * HTTP code with c->recv/c->send/... backed by rktls -> close_notify.
 *
 * The socket stays non-blocking and rktls does the socket I/O itself (fd
 * mode); every RKTLS_WANT_READ/WRITE becomes "not ready" on nginx's event
 * and ngx_handle_read_event()/ngx_handle_write_event(), as for any socket.
 */

#include "ngx_http_rktls.h"


static void ngx_http_rktls_handshake_handler(ngx_event_t *ev);
static void ngx_http_rktls_accept_step(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_handshake_step(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_hand_off(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_refuse(ngx_http_rktls_conn_t *rc, rktls_result r,
    const char *stage);
static void ngx_http_rktls_alert_handler(ngx_event_t *ev);
static void ngx_http_rktls_linger(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_linger_handler(ngx_event_t *ev);
static void ngx_http_rktls_cleanup(void *data);
static ngx_int_t ngx_http_rktls_drain(rktls_connection *conn);
static ngx_int_t ngx_http_rktls_linger_closed(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_linger_start(ngx_event_t *ev);
static void ngx_http_rktls_linger_closed_handler(ngx_event_t *rev);
static ngx_http_rktls_addr_t *ngx_http_rktls_find_addr(ngx_connection_t *c,
    ngx_http_addr_conf_t **addr_conf);
static ngx_http_rktls_srv_conf_t *ngx_http_rktls_by_sni(
    ngx_http_rktls_conn_t *rc, ngx_http_addr_conf_t *addr_conf,
    u_char *name, size_t len);

static ssize_t ngx_http_rktls_recv(ngx_connection_t *c, u_char *buf,
    size_t size);
static ssize_t ngx_http_rktls_recv_chain(ngx_connection_t *c, ngx_chain_t *cl,
    off_t limit);
static ssize_t ngx_http_rktls_send(ngx_connection_t *c, u_char *buf,
    size_t size);
static ngx_chain_t *ngx_http_rktls_send_chain(ngx_connection_t *c,
    ngx_chain_t *in, off_t limit);


/* This worker's connections, indexed like ngx_cycle->connections. */
static ngx_http_rktls_conn_t  **ngx_http_rktls_conns;
static ngx_uint_t               ngx_http_rktls_nconns;


ngx_int_t
ngx_http_rktls_init_worker(ngx_cycle_t *cycle)
{
    ngx_http_rktls_nconns = cycle->connection_n;
    ngx_http_rktls_conns = ngx_calloc(
        sizeof(ngx_http_rktls_conn_t *) * cycle->connection_n, cycle->log);

    return ngx_http_rktls_conns ? NGX_OK : NGX_ERROR;
}


void
ngx_http_rktls_exit_worker(ngx_cycle_t *cycle)
{
    ngx_free(ngx_http_rktls_conns);
    ngx_http_rktls_conns = NULL;
    ngx_http_rktls_nconns = 0;
}


ngx_http_rktls_conn_t *
ngx_http_rktls_get_conn(ngx_connection_t *c)
{
    ngx_uint_t  i;

    if (ngx_http_rktls_conns == NULL || c->fd == (ngx_socket_t) -1) {
        return NULL;
    }

    i = c - ngx_cycle->connections;

    if (i >= ngx_http_rktls_nconns) {
        return NULL;
    }

    return ngx_http_rktls_conns[i];
}


static void
ngx_http_rktls_log_error(ngx_http_rktls_conn_t *rc, ngx_uint_t level,
    rktls_result r, const char *what)
{
    char    msg[512];
    size_t  n;

    msg[0] = '\0';

    if (rc->conn) {
        (void) rktls_connection_error_message(rc->conn, msg, sizeof(msg), &n);
    }

    if (msg[0] == '\0') {
        (void) rktls_last_error_message(msg, sizeof(msg), &n);
    }

    ngx_log_error(level, rc->connection->log, 0, "rktls: %s: %s%s%s", what,
                  rktls_result_str(r), msg[0] ? ": " : "", msg);
}


/* The listening socket's handler: replaces ngx_http_init_connection. */

void
ngx_http_rktls_init_connection(ngx_connection_t *c)
{
    ngx_msec_t              timeout;
    ngx_pool_cleanup_t     *cln;
    ngx_http_rktls_addr_t  *addr;
    ngx_http_rktls_conn_t  *rc;
    ngx_http_addr_conf_t   *addr_conf;

    addr = ngx_http_rktls_find_addr(c, &addr_conf);

    if (addr == NULL || ngx_http_rktls_conns == NULL) {
        /* an address of this socket that no rktls server listens on */
        ngx_http_init_connection(c);
        return;
    }

    rc = ngx_pcalloc(c->pool, sizeof(ngx_http_rktls_conn_t));
    cln = ngx_pool_cleanup_add(c->pool, 0);

    if (rc == NULL || cln == NULL) {
        ngx_http_close_connection(c);
        return;
    }

    rc->connection = c;
    rc->fd = c->fd;
    rc->addr = addr;
    rc->conf = addr->fallback;
    rc->os_send = c->send;
    rc->os_send_chain = c->send_chain;

    /*
     * The socket is closed by our pool cleanup, after close_notify:
     * ngx_close_connection() leaves a "shared" socket open (and in epoll
     * until that close, which follows at once in ngx_destroy_pool()).
     */
    c->shared = 1;
    cln->handler = ngx_http_rktls_cleanup;
    cln->data = rc;

    ngx_http_rktls_conns[c - ngx_cycle->connections] = rc;

    if (rktls_acceptor_new(&rc->acceptor) != RKTLS_OK
        || rktls_acceptor_set_fd(rc->acceptor, (int32_t) c->fd) != RKTLS_OK)
    {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0, "rktls: acceptor failed");
        ngx_http_close_connection(c);
        return;
    }

    c->log->connection = c->number;
    c->log->action = "rktls handshaking";
    c->read->handler = ngx_http_rktls_handshake_handler;
    c->write->handler = ngx_http_rktls_handshake_handler;

    timeout = rc->conf->handshake_timeout;
    ngx_add_timer(c->read, timeout);

    ngx_http_rktls_accept_step(rc);
}


static void
ngx_http_rktls_handshake_handler(ngx_event_t *ev)
{
    ngx_connection_t       *c;
    ngx_http_rktls_conn_t  *rc;

    c = ev->data;
    rc = ngx_http_rktls_get_conn(c);

    if (rc == NULL) {
        ngx_http_close_connection(c);
        return;
    }

    if (ev->timedout) {
        ngx_log_error(NGX_LOG_INFO, c->log, NGX_ETIMEDOUT,
                      "rktls: client timed out in the handshake");
        ngx_http_close_connection(c);
        return;
    }

    if (rc->acceptor) {
        ngx_http_rktls_accept_step(rc);

    } else {
        ngx_http_rktls_handshake_step(rc);
    }
}


/* Wait for the event rktls asked for; false if nginx cannot. */

static ngx_int_t
ngx_http_rktls_wait(ngx_connection_t *c, rktls_result r)
{
    if (r == RKTLS_WANT_READ) {
        c->read->ready = 0;
        return ngx_handle_read_event(c->read, 0);
    }

    c->write->ready = 0;
    return ngx_handle_write_event(c->write, 0);
}


static void
ngx_http_rktls_accept_step(ngx_http_rktls_conn_t *rc)
{
    u_char                   name[256];
    size_t                   len;
    rktls_result             r;
    rktls_accepted          *hello;
    ngx_connection_t        *c;
    ngx_http_addr_conf_t    *addr_conf;

    c = rc->connection;
    hello = NULL;

    r = rktls_acceptor_accept(rc->acceptor, &hello, &rc->alert);

    if (r == RKTLS_WANT_READ || r == RKTLS_WANT_WRITE) {
        if (ngx_http_rktls_wait(c, r) != NGX_OK) {
            ngx_http_close_connection(c);
        }
        return;
    }

    if (r != RKTLS_OK) {
        ngx_http_rktls_refuse(rc, r, "ClientHello refused");
        return;
    }

    rktls_acceptor_free(rc->acceptor);
    rc->acceptor = NULL;

    if (rktls_accepted_server_name(hello, (char *) name, sizeof(name), &len)
        == RKTLS_OK && len > 0)
    {
        (void) ngx_http_rktls_find_addr(c, &addr_conf);
        rc->conf = ngx_http_rktls_by_sni(rc, addr_conf, name, len);
    }

    r = rktls_accepted_into_connection(hello, rc->conf->config, &rc->conn,
                                       &rc->alert);
    rktls_accepted_free(hello);

    if (r != RKTLS_OK) {
        ngx_http_rktls_refuse(rc, r, "handshake refused");
        return;
    }

    ngx_http_rktls_handshake_step(rc);
}


static void
ngx_http_rktls_handshake_step(ngx_http_rktls_conn_t *rc)
{
    rktls_result       r;
    ngx_connection_t  *c;

    c = rc->connection;

    r = rktls_connection_handshake(rc->conn);

    if (r == RKTLS_WANT_READ || r == RKTLS_WANT_WRITE) {
        if (ngx_http_rktls_wait(c, r) != NGX_OK) {
            ngx_http_close_connection(c);
        }
        return;
    }

    if (r != RKTLS_OK) {
        ngx_http_rktls_refuse(rc, r, "handshake failed");
        return;
    }

    ngx_http_rktls_hand_off(rc);
}


/* The handshake is done: nginx's HTTP code takes the connection. */

static void
ngx_http_rktls_hand_off(ngx_http_rktls_conn_t *rc)
{
    ngx_connection_t  *c;

    c = rc->connection;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    rc->handed_off = 1;
    rc->ktls_tx = rktls_connection_ktls_tx(rc->conn);
    rc->ktls_rx = rktls_connection_ktls_rx(rc->conn);

    /* reads always through rktls: control records follow the offload */
    c->recv = ngx_http_rktls_recv;
    c->recv_chain = ngx_http_rktls_recv_chain;

    if (rc->ktls_tx) {
        /* the kernel encrypts: nginx's writev/sendfile on the socket */
        c->send = rc->os_send;
        c->send_chain = rc->os_send_chain;

    } else {
        c->send = ngx_http_rktls_send;
        c->send_chain = ngx_http_rktls_send_chain;
    }

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, c->log, 0,
                   "rktls: handshake done, %s, kTLS tx:%d rx:%d",
                   rktls_cipher_suite_name(
                       rktls_connection_cipher_suite(rc->conn)),
                   rc->ktls_tx, rc->ktls_rx);

    /* rktls may already hold the first request: let nginx read at once */
    c->read->ready = 1;

    ngx_http_init_connection(c);
}


/*
 * A failed accept or handshake: the client's alert is sent (rktls wrote
 * it in fd mode; we finish it if the socket was full), then the lingering
 * close, so that the client reads the alert instead of a reset.
 */

static void
ngx_http_rktls_refuse(ngx_http_rktls_conn_t *rc, rktls_result r,
    const char *stage)
{
    uint8_t            desc;
    ngx_connection_t  *c;

    c = rc->connection;
    rc->failed = 1;

    if (rc->alert && rktls_alert_present(rc->alert)) {
        desc = rktls_alert_get_description(rc->alert);

    } else if (!rc->conn || !rktls_connection_alert_sent(rc->conn, &desc)) {
        desc = 0xff;
    }

    if (desc == 0xff) {
        ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, stage);

    } else {
        char  what[128];

        ngx_snprintf((u_char *) what, sizeof(what), "%s (alert %s sent)%Z",
                     stage, rktls_alert_description_str(desc));
        ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, what);
    }

    c->read->handler = ngx_http_rktls_alert_handler;
    c->write->handler = ngx_http_rktls_alert_handler;
    ngx_http_rktls_alert_handler(c->write);
}


static void
ngx_http_rktls_alert_handler(ngx_event_t *ev)
{
    rktls_result            r;
    ngx_connection_t       *c;
    ngx_http_rktls_conn_t  *rc;

    c = ev->data;
    rc = ngx_http_rktls_get_conn(c);

    if (rc == NULL || ev->timedout) {
        ngx_http_close_connection(c);
        return;
    }

    if (rc->alert && rktls_alert_pending(rc->alert) > 0) {
        r = rktls_alert_write_fd(rc->alert, (int32_t) c->fd);

        if (r == RKTLS_WANT_WRITE) {
            if (ngx_http_rktls_wait(c, r) != NGX_OK) {
                ngx_http_close_connection(c);
            }
            return;
        }

        if (r != RKTLS_OK) {
            ngx_http_close_connection(c);
            return;
        }
    }

    ngx_http_rktls_linger(rc);
}


static void
ngx_http_rktls_linger(ngx_http_rktls_conn_t *rc)
{
    ngx_connection_t          *c;
    ngx_http_core_loc_conf_t  *clcf;

    c = rc->connection;

    if (ngx_shutdown_socket(c->fd, NGX_WRITE_SHUTDOWN) == -1) {
        ngx_http_close_connection(c);
        return;
    }

    c->read->handler = ngx_http_rktls_linger_handler;
    c->write->handler = ngx_http_empty_handler;

    if (c->read->timer_set) {
        ngx_del_timer(c->read);
    }

    clcf = rc->addr->default_server->ctx->loc_conf[
               ngx_http_core_module.ctx_index];
    ngx_add_timer(c->read, clcf->lingering_timeout);

    ngx_http_rktls_linger_handler(c->read);
}


static void
ngx_http_rktls_linger_handler(ngx_event_t *rev)
{
    u_char             buf[4096];
    ssize_t            n;
    ngx_connection_t  *c;

    c = rev->data;

    if (rev->timedout) {
        ngx_http_close_connection(c);
        return;
    }

    for ( ;; ) {
        n = recv(c->fd, buf, sizeof(buf), 0);

        if (n > 0) {
            continue;
        }

        if (n == -1 && ngx_socket_errno == NGX_EAGAIN) {
            rev->ready = 0;

            if (ngx_handle_read_event(rev, 0) != NGX_OK) {
                ngx_http_close_connection(c);
            }

            return;
        }

        if (n == -1 && ngx_socket_errno == NGX_EINTR) {
            continue;
        }

        /* the client closed (or reset): done */
        ngx_http_close_connection(c);
        return;
    }
}


/*
 * c->pool is destroyed right after ngx_close_connection(), which left the
 * "shared" socket open (and in epoll): send close_notify on a connection
 * nginx's HTTP code was using, then close the socket, after a lingering
 * close if the client has not finished: closing a socket that still
 * receives (the client's own close_notify) sends a reset, which can destroy
 * the response the client has not read yet.
 */

static void
ngx_http_rktls_cleanup(void *data)
{
    ngx_http_rktls_conn_t  *rc = data;

    ngx_uint_t  i;

    i = rc->connection - ngx_cycle->connections;

    if (ngx_http_rktls_conns && i < ngx_http_rktls_nconns
        && ngx_http_rktls_conns[i] == rc)
    {
        ngx_http_rktls_conns[i] = NULL;
    }

    if (rc->conn && rc->handed_off && !rc->failed) {
        /* one non-blocking attempt: the socket buffer takes 31 bytes */
        (void) rktls_connection_shutdown(rc->conn);

        if (ngx_http_rktls_drain(rc->conn) == NGX_AGAIN
            && ngx_http_rktls_linger_closed(rc) == NGX_OK)
        {
            rc->conn = NULL;                /* the lingering close owns both */
            rc->fd = (ngx_socket_t) -1;
        }
    }

    rktls_connection_free(rc->conn);
    rktls_acceptor_free(rc->acceptor);
    rktls_alert_free(rc->alert);
    rc->conn = NULL;
    rc->acceptor = NULL;
    rc->alert = NULL;

    if (rc->fd != (ngx_socket_t) -1) {
        if (ngx_close_socket(rc->fd) == -1) {
            ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_socket_errno,
                          ngx_close_socket_n " %d failed", rc->fd);
        }
        rc->fd = (ngx_socket_t) -1;
    }
}


/* Read and drop what the client sent after our close_notify: NGX_OK when
 * it is done (its close_notify, end of file or an error), NGX_AGAIN when
 * the socket has nothing more yet. Bounded: at most 64 reads a call. */

static ngx_int_t
ngx_http_rktls_drain(rktls_connection *conn)
{
    u_char        buf[4096];
    size_t        n;
    ngx_uint_t    i;
    rktls_result  r;

    for (i = 0; i < 64; i++) {
        r = rktls_connection_read(conn, buf, sizeof(buf), &n);

        if (r == RKTLS_WANT_READ) {
            return NGX_AGAIN;
        }

        if (r != RKTLS_OK) {
            return NGX_OK;
        }
    }

    return NGX_AGAIN;
}


/*
 * The lingering close after close_notify, on a connection object of its
 * own. It starts from a posted event, after the current one: nginx's code
 * that closed the HTTP connection may still look at that object (e.g.
 * c->destroyed), so it must not be reused before. The socket's epoll
 * registration, which ngx_close_connection() leaves for a "shared" socket,
 * is dropped first, and the new connection registers afresh with its own
 * instance bit. Bounded by nginx's lingering_timeout; the timer does not
 * delay a worker's exit.
 */

typedef struct {
    ngx_event_t         event;
    rktls_connection   *conn;
    ngx_socket_t        fd;
    ngx_msec_t          timeout;
    unsigned            registered:1;
} ngx_http_rktls_linger_t;


static ngx_int_t
ngx_http_rktls_linger_closed(ngx_http_rktls_conn_t *rc)
{
    ngx_http_rktls_linger_t   *lg;
    ngx_http_core_loc_conf_t  *clcf;

    if (ngx_del_conn == NULL) {
        return NGX_DECLINED;
    }

    lg = ngx_calloc(sizeof(ngx_http_rktls_linger_t), ngx_cycle->log);
    if (lg == NULL) {
        return NGX_DECLINED;
    }

    clcf = rc->addr->default_server->ctx->loc_conf[
               ngx_http_core_module.ctx_index];

    lg->conn = rc->conn;
    lg->fd = rc->fd;
    lg->timeout = clcf->lingering_timeout;
    /* the freed connection still says whether epoll has the socket */
    lg->registered = rc->connection->read->active
                     || rc->connection->write->active;

    lg->event.data = lg;
    lg->event.handler = ngx_http_rktls_linger_start;
    lg->event.log = ngx_cycle->log;
    ngx_post_event(&lg->event, &ngx_posted_events);

    return NGX_OK;
}


static void
ngx_http_rktls_linger_start(ngx_event_t *ev)
{
    ngx_connection_t         *nc;
    ngx_http_rktls_linger_t  *lg;

    lg = ev->data;

    nc = ngx_get_connection(lg->fd, ngx_cycle->log);
    if (nc == NULL) {
        goto failed;
    }

    if (lg->registered) {
        nc->read->active = 1;
        nc->write->active = 1;

        if (ngx_del_conn(nc, 0) != NGX_OK) {
            ngx_free_connection(nc);
            goto failed;
        }
    }

    nc->data = lg;
    nc->read->log = nc->log;
    nc->write->log = nc->log;
    nc->read->handler = ngx_http_rktls_linger_closed_handler;
    nc->write->handler = ngx_http_empty_handler;
    nc->read->cancelable = 1;

    ngx_add_timer(nc->read, lg->timeout);
    nc->read->ready = 1;

    ngx_http_rktls_linger_closed_handler(nc->read);
    return;

failed:

    rktls_connection_free(lg->conn);
    (void) ngx_close_socket(lg->fd);
    ngx_free(lg);
}


static void
ngx_http_rktls_linger_closed_handler(ngx_event_t *rev)
{
    ngx_connection_t         *nc;
    ngx_http_rktls_linger_t  *lg;

    nc = rev->data;
    lg = nc->data;

    if (!rev->timedout && ngx_http_rktls_drain(lg->conn) == NGX_AGAIN) {
        rev->ready = 0;

        if (ngx_handle_read_event(rev, 0) == NGX_OK) {
            return;
        }
    }

    rktls_connection_free(lg->conn);
    ngx_free(lg);
    ngx_close_connection(nc);
}


/*
 * Which of the listening socket's addresses the connection arrived on, as
 * ngx_http_init_connection() finds it, and our entry for that address.
 */

static ngx_http_rktls_addr_t *
ngx_http_rktls_find_addr(ngx_connection_t *c, ngx_http_addr_conf_t **out)
{
    in_port_t                    port;
    ngx_uint_t                   i;
    ngx_http_port_t             *hport;
    ngx_http_in_addr_t          *addr;
    struct sockaddr_in          *sin;
    ngx_http_addr_conf_t        *addr_conf;
    ngx_http_rktls_addr_t       *ra;
    ngx_http_rktls_main_conf_t  *rmcf;
#if (NGX_HAVE_INET6)
    ngx_http_in6_addr_t         *addr6;
    struct sockaddr_in6         *sin6;
#endif

    hport = c->listening->servers;

    if (hport->naddrs > 1) {
        if (ngx_connection_local_sockaddr(c, NULL, 0) != NGX_OK) {
            return NULL;
        }
    }

    switch (c->listening->sockaddr->sa_family) {

#if (NGX_HAVE_INET6)
    case AF_INET6:
        addr6 = hport->addrs;
        i = 0;

        if (hport->naddrs > 1) {
            sin6 = (struct sockaddr_in6 *) c->local_sockaddr;
            for ( /* void */ ; i < hport->naddrs - 1; i++) {
                if (ngx_memcmp(&addr6[i].addr6, &sin6->sin6_addr, 16) == 0) {
                    break;
                }
            }
        }

        addr_conf = &addr6[i].conf;
        break;
#endif

    default:
        addr = hport->addrs;
        i = 0;

        if (hport->naddrs > 1) {
            sin = (struct sockaddr_in *) c->local_sockaddr;
            for ( /* void */ ; i < hport->naddrs - 1; i++) {
                if (addr[i].addr == sin->sin_addr.s_addr) {
                    break;
                }
            }
        }

        addr_conf = &addr[i].conf;
        break;
    }

    *out = addr_conf;

    rmcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                               ngx_http_rktls_module);
    if (rmcf == NULL) {
        return NULL;
    }

    port = ngx_inet_get_port(c->listening->sockaddr);
    ra = rmcf->addrs.elts;

    for (i = 0; i < rmcf->addrs.nelts; i++) {
        if (ra[i].default_server == addr_conf->default_server
            && ngx_inet_get_port(ra[i].sockaddr) == port)
        {
            return &ra[i];
        }
    }

    return NULL;
}


/* The server{} named by SNI, as nginx finds one by Host (exact and wildcard
 * names); the address's default rktls config if it has none. */

static ngx_http_rktls_srv_conf_t *
ngx_http_rktls_by_sni(ngx_http_rktls_conn_t *rc,
    ngx_http_addr_conf_t *addr_conf, u_char *name, size_t len)
{
    ngx_uint_t                  key;
    ngx_http_core_srv_conf_t   *cscf;
    ngx_http_rktls_srv_conf_t  *rscf;

    if (addr_conf == NULL || addr_conf->virtual_names == NULL) {
        return rc->addr->fallback;
    }

    ngx_strlow(name, name, len);
    key = ngx_hash_key(name, len);

    cscf = ngx_hash_find_combined(&addr_conf->virtual_names->names, key,
                                  name, len);
    if (cscf == NULL) {
        return rc->addr->fallback;
    }

    rscf = cscf->ctx->srv_conf[ngx_http_rktls_module.ctx_index];

    return (rscf->config != NULL) ? rscf : rc->addr->fallback;
}


/* c->recv: plaintext from rktls, nginx's ready flag kept honest (rktls may
 * hold decrypted bytes epoll cannot see, so read until it would block). */

static ssize_t
ngx_http_rktls_recv(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t                  n, total;
    rktls_result            r;
    ngx_http_rktls_conn_t  *rc;

    rc = ngx_http_rktls_get_conn(c);

    if (rc == NULL || rc->conn == NULL) {
        c->read->error = 1;
        return NGX_ERROR;
    }

    total = 0;
    r = RKTLS_OK;

    while (total < size) {
        n = 0;
        r = rktls_connection_read(rc->conn, buf + total, size - total, &n);

        if (r != RKTLS_OK) {
            break;
        }

        total += n;
    }

    if (total > 0) {
        /* full: more may wait; an end or error: the next call returns it */
        c->read->ready = (r != RKTLS_WANT_READ && r != RKTLS_WANT_WRITE);
        return total;
    }

    switch (r) {

    case RKTLS_WANT_READ:
    case RKTLS_WANT_WRITE:
        c->read->ready = 0;
        return NGX_AGAIN;

    case RKTLS_CLOSED:
        /* the client's close_notify (rktls answered with ours) */
        c->read->ready = 0;
        c->read->eof = 1;
        return 0;

    case RKTLS_ERR_TRUNCATED:
        c->read->ready = 0;
        c->read->eof = 1;
        return 0;

    default:
        rc->failed = 1;
        ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, "read failed");
        c->read->ready = 0;
        c->read->error = 1;
        return NGX_ERROR;
    }
}


static ssize_t
ngx_http_rktls_recv_chain(ngx_connection_t *c, ngx_chain_t *cl, off_t limit)
{
    size_t   size;
    ssize_t  n, bytes;

    bytes = 0;

    for ( /* void */ ; cl; cl = cl->next) {
        size = cl->buf->end - cl->buf->last;

        if (limit) {
            if (bytes >= limit) {
                return bytes;
            }

            if ((off_t) size > limit - bytes) {
                size = (size_t) (limit - bytes);
            }
        }

        if (size == 0) {
            continue;
        }

        n = ngx_http_rktls_recv(c, cl->buf->last, size);

        if (n > 0) {
            cl->buf->last += n;
            bytes += n;

            if ((size_t) n < size || !c->read->ready) {
                return bytes;
            }

            continue;
        }

        return bytes ? bytes : n;
    }

    return bytes;
}


/* Without kTLS TX: everything is encrypted by rktls. Bytes rktls accepted
 * but could not send yet keep c->buffered set, as OpenSSL's buffer does, so
 * that nginx calls send_chain again (with no data) until they are out. */

static ngx_int_t
ngx_http_rktls_flush(ngx_connection_t *c, ngx_http_rktls_conn_t *rc)
{
    rktls_result  r;

    r = rktls_connection_flush(rc->conn);

    if (r == RKTLS_OK) {
        c->buffered &= ~NGX_SSL_BUFFERED;
        return NGX_OK;
    }

    c->buffered |= NGX_SSL_BUFFERED;

    if (r == RKTLS_WANT_WRITE) {
        c->write->ready = 0;
        return NGX_AGAIN;
    }

    rc->failed = 1;
    ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, "send failed");
    c->write->error = 1;
    return NGX_ERROR;
}


static ssize_t
ngx_http_rktls_send(ngx_connection_t *c, u_char *buf, size_t size)
{
    size_t                  n, total;
    ngx_int_t               rv;
    rktls_result            r;
    ngx_http_rktls_conn_t  *rc;

    rc = ngx_http_rktls_get_conn(c);

    if (rc == NULL || rc->conn == NULL) {
        c->write->error = 1;
        return NGX_ERROR;
    }

    rv = ngx_http_rktls_flush(c, rc);

    if (rv != NGX_OK) {
        return rv;
    }

    total = 0;

    while (total < size) {
        n = 0;
        r = rktls_connection_write(rc->conn, buf + total, size - total, &n);

        if (r == RKTLS_WANT_WRITE) {
            break;
        }

        if (r != RKTLS_OK) {
            rc->failed = 1;
            ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, "write failed");
            c->write->error = 1;
            return NGX_ERROR;
        }

        total += n;
    }

    rv = ngx_http_rktls_flush(c, rc);

    if (rv == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (total == 0) {
        c->write->ready = 0;
        return NGX_AGAIN;
    }

    c->sent += total;
    return total;
}


static ngx_chain_t *
ngx_http_rktls_send_chain(ngx_connection_t *c, ngx_chain_t *in, off_t limit)
{
    off_t                   sent, left, off;
    size_t                  n, size;
    u_char                 *p;
    int64_t                 foff;
    ngx_int_t               rv;
    ngx_buf_t              *b;
    ngx_chain_t            *cl;
    rktls_result            r;
    ngx_http_rktls_conn_t  *rc;

    rc = ngx_http_rktls_get_conn(c);

    if (rc == NULL || rc->conn == NULL) {
        c->write->error = 1;
        return NGX_CHAIN_ERROR;
    }

    if (limit == 0 || limit > (off_t) (NGX_MAX_SIZE_T_VALUE - ngx_pagesize)) {
        limit = NGX_MAX_SIZE_T_VALUE - ngx_pagesize;
    }

    rv = ngx_http_rktls_flush(c, rc);

    if (rv == NGX_ERROR) {
        return NGX_CHAIN_ERROR;
    }

    if (rv == NGX_AGAIN) {
        return in;
    }

    sent = 0;
    r = RKTLS_OK;

    for (cl = in; cl && sent < limit && r == RKTLS_OK; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_special(b)) {
            continue;
        }

        if (ngx_buf_in_memory(b)) {
            p = b->pos;

            while (p < b->last && sent < limit) {
                size = ngx_min((off_t) (b->last - p), limit - sent);
                n = 0;
                r = rktls_connection_write(rc->conn, p, size, &n);

                if (r != RKTLS_OK) {
                    break;
                }

                p += n;
                sent += n;
            }

            continue;
        }

        if (!b->in_file) {
            continue;
        }

        off = b->file_pos;

        while (off < b->file_last && sent < limit) {
            left = ngx_min(b->file_last - off, limit - sent);
            foff = off;
            n = 0;
            r = rktls_connection_sendfile(rc->conn, (int32_t) b->file->fd,
                                          &foff, (size_t) left, &n);
            if (r != RKTLS_OK) {
                break;
            }

            if (n == 0) {
                ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                              "rktls: file \"%V\" was truncated",
                              &b->file->name);
                c->write->error = 1;
                return NGX_CHAIN_ERROR;
            }

            off += n;
            sent += n;
        }
    }

    if (r != RKTLS_OK && r != RKTLS_WANT_WRITE) {
        rc->failed = 1;
        ngx_http_rktls_log_error(rc, NGX_LOG_INFO, r, "send failed");
        c->write->error = 1;
        return NGX_CHAIN_ERROR;
    }

    c->sent += sent;
    in = ngx_chain_update_sent(in, sent);

    rv = ngx_http_rktls_flush(c, rc);

    if (rv == NGX_ERROR) {
        return NGX_CHAIN_ERROR;
    }

    if (r == RKTLS_WANT_WRITE) {
        c->write->ready = 0;
    }

    return in;
}
