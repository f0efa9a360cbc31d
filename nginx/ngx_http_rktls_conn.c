/*
 * ngx_http_rktls_module, the start of a connection: accept -> rktls
 * acceptor on nginx's event loop -> config by SNI -> handshake (and kTLS)
 * -> nginx's HTTP code, with c->recv/c->send/... backed by rktls
 * (ngx_http_rktls_io.c); a refused client gets its alert and a lingering
 * close here. The end, close_notify, is in ngx_http_rktls_close.c.
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
static ngx_http_rktls_addr_t *ngx_http_rktls_find_addr(ngx_connection_t *c,
    ngx_http_addr_conf_t **addr_conf);
static ngx_http_rktls_srv_conf_t *ngx_http_rktls_by_sni(
    ngx_http_rktls_conn_t *rc, ngx_http_addr_conf_t *addr_conf,
    u_char *name, size_t len);



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


void
ngx_http_rktls_forget_conn(ngx_http_rktls_conn_t *rc)
{
    ngx_uint_t  i;

    i = rc->connection - ngx_cycle->connections;

    if (ngx_http_rktls_conns && i < ngx_http_rktls_nconns
        && ngx_http_rktls_conns[i] == rc)
    {
        ngx_http_rktls_conns[i] = NULL;
    }
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


void
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
    ngx_msec_t                 timeout;
    ngx_pool_cleanup_t        *cln;
    ngx_http_rktls_addr_t     *addr;
    ngx_http_rktls_conn_t     *rc;
    ngx_http_addr_conf_t      *addr_conf;
    ngx_http_core_loc_conf_t  *clcf;

    addr = ngx_http_rktls_find_addr(c, &addr_conf);

    if (addr == NULL || ngx_http_rktls_conns == NULL) {
        /* an address of this socket that no rktls server listens on */
        ngx_http_init_connection(c);
        return;
    }

    /*
     * As nginx does before its own TLS handshake (tcp_nodelay, on by
     * default): every flight and record leaves at once. Without it Nagle
     * holds a response's second small record (rktls writes the head and
     * the body as records of their own, then close_notify) until the
     * client's delayed ACK: about 40 ms per connection.
     */
    clcf = addr->default_server->ctx->loc_conf[ngx_http_core_module.ctx_index];

    if (clcf->tcp_nodelay && ngx_tcp_nodelay(c) != NGX_OK) {
        ngx_http_close_connection(c);
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
