/*
 * ngx_http_rktls_module, the data: c->recv, c->recv_chain, c->send and
 * c->send_chain of an rktls connection. Reads always go through rktls (the
 * kernel's control records after an offload are handled there); writes go
 * through rktls unless the kernel encrypts (then nginx's own functions are
 * used, see ngx_http_rktls_hand_off()).
 */

#include "ngx_http_rktls.h"


static void ngx_http_rktls_write_wakes_reader(ngx_event_t *wev);
static ngx_int_t ngx_http_rktls_read_wants_write(ngx_connection_t *c,
    ngx_http_rktls_conn_t *rc);
static void ngx_http_rktls_restore_write(ngx_connection_t *c,
    ngx_http_rktls_conn_t *rc);


/* c->recv: plaintext from rktls, nginx's ready flag kept honest (rktls may
 * hold decrypted bytes epoll cannot see, so read until it would block). */

ssize_t
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

    if (total == 0 && r == RKTLS_WANT_WRITE) {
        return ngx_http_rktls_read_wants_write(c, rc);
    }

    ngx_http_rktls_restore_write(c, rc);

    if (total > 0) {
        /* full: more may wait; an end or error: the next call returns it */
        c->read->ready = (r != RKTLS_WANT_READ && r != RKTLS_WANT_WRITE);
        return total;
    }

    switch (r) {

    case RKTLS_WANT_READ:
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


/*
 * A read returned RKTLS_WANT_WRITE: after the handshake that means the
 * connection failed and the alert owed to the client waits for room in the
 * socket (the next read, once it has left, returns the error). nginx's HTTP
 * code waits for a read event after NGX_AGAIN from c->recv, which may never
 * come: also wait for the socket to be writable, and then call the read
 * handler, as nginx's own ngx_ssl_recv() does for OpenSSL's WANT_WRITE.
 */

static ngx_int_t
ngx_http_rktls_read_wants_write(ngx_connection_t *c, ngx_http_rktls_conn_t *rc)
{
    c->read->ready = 0;
    c->write->ready = 0;

    if (ngx_handle_write_event(c->write, 0) != NGX_OK) {
        c->read->error = 1;
        return NGX_ERROR;
    }

    if (rc->saved_write_handler == NULL) {
        rc->saved_write_handler = c->write->handler;
        c->write->handler = ngx_http_rktls_write_wakes_reader;
    }

    return NGX_AGAIN;
}


static void
ngx_http_rktls_write_wakes_reader(ngx_event_t *wev)
{
    ngx_connection_t  *c;

    c = wev->data;

    /* the read sends the rest of the alert (or waits again) */
    c->read->ready = 1;
    c->read->handler(c->read);
}


/* The read made progress: the write event is nginx's again, and a write
 * readiness the reader consumed is passed on. */

static void
ngx_http_rktls_restore_write(ngx_connection_t *c, ngx_http_rktls_conn_t *rc)
{
    if (rc->saved_write_handler == NULL) {
        return;
    }

    if (c->write->handler == ngx_http_rktls_write_wakes_reader) {
        c->write->handler = rc->saved_write_handler;

        if (c->write->ready) {
            ngx_post_event(c->write, &ngx_posted_events);
        }
    }

    rc->saved_write_handler = NULL;
}


ssize_t
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


ssize_t
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


ngx_chain_t *
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
