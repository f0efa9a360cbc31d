/*
 * ngx_http_rktls_module: TLS for nginx's HTTP servers through rktls.
 * Shared between the configuration part (ngx_http_rktls_module.c) and the
 * connection part (ngx_http_rktls_conn.c).
 */

#ifndef NGX_HTTP_RKTLS_H
#define NGX_HTTP_RKTLS_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>
#include <ngx_http.h>
#include <rktls.h>


/* One server{}'s rktls_* settings and the rktls config built from them. */
typedef struct {
    ngx_flag_t                  enable;
    ngx_array_t                *certificates;      /* ngx_str_t */
    ngx_array_t                *certificate_keys;  /* ngx_str_t */
    ngx_array_t                *cert_where;        /* "file:line" of each key */
    ngx_array_t                *protocols;         /* uint16_t versions */
    ngx_array_t                *ciphers;           /* uint16_t suite ids */
    ngx_uint_t                  ktls;              /* rktls_ktls_mode */
    ngx_flag_t                  session_tickets;
    ngx_array_t                *ticket_keys;       /* ngx_str_t file names */
    ngx_msec_t                  handshake_timeout;

    u_char                     *on_file;           /* where "rktls on" is */
    ngx_uint_t                  on_line;

    const rktls_server_config  *config;            /* built when enabled */
} ngx_http_rktls_srv_conf_t;


/* An address:port some rktls server listens on. */
typedef struct {
    struct sockaddr            *sockaddr;
    socklen_t                   socklen;
    ngx_http_core_srv_conf_t   *default_server;    /* nginx's, for matching */
    ngx_http_rktls_srv_conf_t  *fallback;          /* when SNI matches none */
} ngx_http_rktls_addr_t;


typedef struct {
    ngx_array_t                 addrs;             /* ngx_http_rktls_addr_t */
} ngx_http_rktls_main_conf_t;


/* A connection on an rktls socket. Lives in c->pool. */
typedef struct {
    ngx_connection_t           *connection;
    ngx_socket_t                fd;                /* c->fd, kept for close */
    ngx_http_rktls_addr_t      *addr;
    ngx_http_rktls_srv_conf_t  *conf;              /* chosen by SNI */
    rktls_acceptor             *acceptor;
    rktls_connection           *conn;
    rktls_alert                *alert;

    ngx_send_pt                 os_send;           /* nginx's own I/O */
    ngx_send_chain_pt           os_send_chain;

    /* while a read waits for the socket to take an alert (io.c) */
    ngx_event_handler_pt        saved_write_handler;

    unsigned                    handed_off:1;      /* nginx HTTP has it */
    unsigned                    failed:1;
    unsigned                    ktls_tx:1;
    unsigned                    ktls_rx:1;
} ngx_http_rktls_conn_t;


extern ngx_module_t  ngx_http_rktls_module;

/* configuration (ngx_http_rktls_config.c) */
char *ngx_http_rktls_on(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_rktls_certificate_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_rktls_protocols(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_rktls_ciphers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_rktls_build(ngx_conf_t *cf, ngx_http_rktls_srv_conf_t *rscf);
ngx_str_t *ngx_http_rktls_protocol_name(uint16_t version);

/* accept and handshake (ngx_http_rktls_conn.c) */
void ngx_http_rktls_init_connection(ngx_connection_t *c);
ngx_http_rktls_conn_t *ngx_http_rktls_get_conn(ngx_connection_t *c);
void ngx_http_rktls_forget_conn(ngx_http_rktls_conn_t *rc);
void ngx_http_rktls_log_error(ngx_http_rktls_conn_t *rc, ngx_uint_t level,
    rktls_result r, const char *what);

/* data (ngx_http_rktls_io.c) */
ssize_t ngx_http_rktls_recv(ngx_connection_t *c, u_char *buf, size_t size);
ssize_t ngx_http_rktls_recv_chain(ngx_connection_t *c, ngx_chain_t *cl,
    off_t limit);
ssize_t ngx_http_rktls_send(ngx_connection_t *c, u_char *buf, size_t size);
ngx_chain_t *ngx_http_rktls_send_chain(ngx_connection_t *c, ngx_chain_t *in,
    off_t limit);

/* close (ngx_http_rktls_close.c) */
void ngx_http_rktls_cleanup(void *data);
ngx_int_t ngx_http_rktls_drain(rktls_connection *conn);
ngx_int_t ngx_http_rktls_init_worker(ngx_cycle_t *cycle);
void ngx_http_rktls_exit_worker(ngx_cycle_t *cycle);

#endif /* NGX_HTTP_RKTLS_H */
