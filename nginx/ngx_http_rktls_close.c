/*
 * ngx_http_rktls_module, the end of a connection: close_notify when nginx
 * closes a connection its HTTP code was using, then a lingering close while
 * the client answers, and the socket closed last.
 */

#include "ngx_http_rktls.h"


static ngx_int_t ngx_http_rktls_linger_closed(ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_linger_start(ngx_event_t *ev);
static void ngx_http_rktls_linger_closed_handler(ngx_event_t *rev);


/*
 * c->pool is destroyed right after ngx_close_connection(), which left the
 * "shared" socket open (and in epoll): send close_notify on a connection
 * nginx's HTTP code was using, then close the socket, after a lingering
 * close if the client has not finished: closing a socket that still
 * receives (the client's own close_notify) sends a reset, which can destroy
 * the response the client has not read yet.
 */

void
ngx_http_rktls_cleanup(void *data)
{
    ngx_http_rktls_conn_t  *rc = data;

    ngx_http_rktls_forget_conn(rc);

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

ngx_int_t
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
