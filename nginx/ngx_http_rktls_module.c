/*
 * ngx_http_rktls_module, the configuration: directives, the rktls server
 * configs built from them, the listening sockets taken over, variables.
 */

#include "ngx_http_rktls.h"


static ngx_int_t ngx_http_rktls_add_variables(ngx_conf_t *cf);
static void *ngx_http_rktls_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_rktls_create_srv_conf(ngx_conf_t *cf);
static char *ngx_http_rktls_merge_srv_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_rktls_postconfiguration(ngx_conf_t *cf);
static ngx_int_t ngx_http_rktls_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_rktls_init_process(ngx_cycle_t *cycle);


static ngx_int_t ngx_http_rktls_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_conf_enum_t  ngx_http_rktls_ktls_modes[] = {
    { ngx_string("off"), RKTLS_KTLS_OFF },
    { ngx_string("prefer"), RKTLS_KTLS_PREFER },
    { ngx_string("require"), RKTLS_KTLS_REQUIRE },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_rktls_commands[] = {

    { ngx_string("rktls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_http_rktls_on,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, enable),
      NULL },

    { ngx_string("rktls_certificate"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, certificates),
      NULL },

    { ngx_string("rktls_certificate_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_http_rktls_certificate_key,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rktls_protocols"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_1MORE,
      ngx_http_rktls_protocols,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rktls_ciphers"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_1MORE,
      ngx_http_rktls_ciphers,
      NGX_HTTP_SRV_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("rktls_ktls"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_enum_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, ktls),
      &ngx_http_rktls_ktls_modes },

    { ngx_string("rktls_session_tickets"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, session_tickets),
      NULL },

    { ngx_string("rktls_session_ticket_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_array_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, ticket_keys),
      NULL },

    { ngx_string("rktls_handshake_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_SRV_CONF_OFFSET,
      offsetof(ngx_http_rktls_srv_conf_t, handshake_timeout),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_rktls_module_ctx = {
    ngx_http_rktls_add_variables,          /* preconfiguration */
    ngx_http_rktls_postconfiguration,      /* postconfiguration */

    ngx_http_rktls_create_main_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    ngx_http_rktls_create_srv_conf,        /* create server configuration */
    ngx_http_rktls_merge_srv_conf,         /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_rktls_module = {
    NGX_MODULE_V1,
    &ngx_http_rktls_module_ctx,            /* module context */
    ngx_http_rktls_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_rktls_init_module,            /* init module */
    ngx_http_rktls_init_process,           /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_rktls_exit_worker,            /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


enum {
    NGX_HTTP_RKTLS_VAR_PROTOCOL,
    NGX_HTTP_RKTLS_VAR_CIPHER,
    NGX_HTTP_RKTLS_VAR_SERVER_NAME,
    NGX_HTTP_RKTLS_VAR_KTLS
};


static ngx_http_variable_t  ngx_http_rktls_vars[] = {

    { ngx_string("rktls_protocol"), NULL, ngx_http_rktls_variable,
      NGX_HTTP_RKTLS_VAR_PROTOCOL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rktls_cipher"), NULL, ngx_http_rktls_variable,
      NGX_HTTP_RKTLS_VAR_CIPHER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rktls_server_name"), NULL, ngx_http_rktls_variable,
      NGX_HTTP_RKTLS_VAR_SERVER_NAME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("rktls_ktls"), NULL, ngx_http_rktls_variable,
      NGX_HTTP_RKTLS_VAR_KTLS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};



static void
ngx_http_rktls_log(void *userdata, uint32_t level, const char *message,
    size_t len)
{
    ngx_uint_t  nlevel;

    (void) userdata;

    switch (level) {
    case RKTLS_LOG_ERROR:
        nlevel = NGX_LOG_ERR;
        break;
    case RKTLS_LOG_WARN:
        nlevel = NGX_LOG_WARN;
        break;
    default:
        nlevel = NGX_LOG_INFO;
        break;
    }

    ngx_log_error(nlevel, ngx_cycle->log, 0, "rktls: %*s", len, message);
}


static ngx_int_t
ngx_http_rktls_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_rktls_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rktls_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    size_t                  len;
    ngx_str_t              *name;
    const char             *s;
    ngx_http_rktls_conn_t  *rc;

    rc = ngx_http_rktls_get_conn(r->connection);

    if (rc == NULL || rc->conn == NULL || !rc->handed_off) {
        v->not_found = 1;
        return NGX_OK;
    }

    s = NULL;

    switch (data) {

    case NGX_HTTP_RKTLS_VAR_PROTOCOL:
        name = ngx_http_rktls_protocol_name(
                   rktls_connection_protocol_version(rc->conn));
        if (name == NULL) {
            v->not_found = 1;
            return NGX_OK;
        }
        v->data = name->data;
        v->len = name->len;
        goto found;

    case NGX_HTTP_RKTLS_VAR_CIPHER:
        s = rktls_cipher_suite_name(rktls_connection_cipher_suite(rc->conn));
        break;

    case NGX_HTTP_RKTLS_VAR_SERVER_NAME:
        v->data = ngx_pnalloc(r->pool, 256);
        if (v->data == NULL) {
            return NGX_ERROR;
        }
        if (rktls_connection_server_name(rc->conn, (char *) v->data, 256,
                                         &len)
            != RKTLS_OK)
        {
            v->not_found = 1;
            return NGX_OK;
        }
        v->len = len;
        goto found;

    case NGX_HTTP_RKTLS_VAR_KTLS:
        s = rc->ktls_tx ? (rc->ktls_rx ? "tx+rx" : "tx")
                        : (rc->ktls_rx ? "rx" : "off");
        break;
    }

    v->data = (u_char *) s;
    v->len = ngx_strlen(s);

found:

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static void *
ngx_http_rktls_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_rktls_main_conf_t  *rmcf;

    rmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rktls_main_conf_t));
    if (rmcf == NULL) {
        return NULL;
    }

    if (ngx_array_init(&rmcf->addrs, cf->pool, 4,
                       sizeof(ngx_http_rktls_addr_t))
        != NGX_OK)
    {
        return NULL;
    }

    return rmcf;
}


static void *
ngx_http_rktls_create_srv_conf(ngx_conf_t *cf)
{
    ngx_http_rktls_srv_conf_t  *rscf;

    rscf = ngx_pcalloc(cf->pool, sizeof(ngx_http_rktls_srv_conf_t));
    if (rscf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc(): protocols, ciphers, cert_where, on_file,
     * config = NULL
     */

    rscf->enable = NGX_CONF_UNSET;
    rscf->certificates = NGX_CONF_UNSET_PTR;
    rscf->certificate_keys = NGX_CONF_UNSET_PTR;
    rscf->ktls = NGX_CONF_UNSET_UINT;
    rscf->session_tickets = NGX_CONF_UNSET;
    rscf->ticket_keys = NGX_CONF_UNSET_PTR;
    rscf->handshake_timeout = NGX_CONF_UNSET_MSEC;

    return rscf;
}



static char *
ngx_http_rktls_merge_srv_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_rktls_srv_conf_t *prev = parent;
    ngx_http_rktls_srv_conf_t *conf = child;

    ngx_http_core_srv_conf_t  *cscf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->certificates, prev->certificates, NULL);

    if (conf->certificate_keys == NGX_CONF_UNSET_PTR) {
        conf->certificate_keys = prev->certificate_keys;
        conf->cert_where = prev->cert_where;
    }

    if (conf->certificate_keys == NGX_CONF_UNSET_PTR) {
        conf->certificate_keys = NULL;
    }

    if (conf->protocols == NULL) {
        conf->protocols = prev->protocols;
    }

    if (conf->ciphers == NULL) {
        conf->ciphers = prev->ciphers;
    }

    if (conf->on_file == NULL) {
        conf->on_file = prev->on_file;
        conf->on_line = prev->on_line;
    }

    ngx_conf_merge_uint_value(conf->ktls, prev->ktls, RKTLS_KTLS_OFF);
    ngx_conf_merge_value(conf->session_tickets, prev->session_tickets, 1);
    ngx_conf_merge_ptr_value(conf->ticket_keys, prev->ticket_keys, NULL);

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    ngx_conf_merge_msec_value(conf->handshake_timeout,
                              prev->handshake_timeout,
                              cscf->client_header_timeout);

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    return ngx_http_rktls_build(cf, conf);
}


/*
 * Every address:port a server with "rktls on" listens on is taken over
 * (all servers on it share the socket); "listen ... ssl" there is refused.
 */

static ngx_int_t
ngx_http_rktls_postconfiguration(ngx_conf_t *cf)
{
    ngx_uint_t                    p, a, s;
    ngx_http_conf_port_t         *port;
    ngx_http_conf_addr_t         *addr;
    ngx_http_rktls_addr_t        *ra;
    ngx_http_core_srv_conf_t    **cscfp;
    ngx_http_core_main_conf_t    *cmcf;
    ngx_http_rktls_main_conf_t   *rmcf;
    ngx_http_rktls_srv_conf_t    *rscf, *first, *def;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    rmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_rktls_module);

    if (cmcf->ports == NULL) {
        return NGX_OK;
    }

    port = cmcf->ports->elts;

    for (p = 0; p < cmcf->ports->nelts; p++) {
        addr = port[p].addrs.elts;

        for (a = 0; a < port[p].addrs.nelts; a++) {
            first = NULL;
            cscfp = addr[a].servers.elts;

            for (s = 0; s < addr[a].servers.nelts; s++) {
                rscf = cscfp[s]->ctx->srv_conf[ngx_http_rktls_module.ctx_index];

                if (rscf->config == NULL) {
                    continue;
                }

                if (addr[a].opt.ssl) {
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "\"rktls on\" in %s:%ui and \"listen %V "
                                  "ssl\" cannot share a socket: rktls "
                                  "terminates TLS itself, drop \"ssl\"",
                                  rscf->on_file, rscf->on_line,
                                  &addr[a].opt.addr_text);
                    return NGX_ERROR;
                }

                if (addr[a].opt.http2 || addr[a].opt.proxy_protocol) {
                    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                                  "\"rktls on\" in %s:%ui: \"listen %V %s\" "
                                  "is not supported with rktls (HTTP/1.1 "
                                  "only, no PROXY protocol header)",
                                  rscf->on_file, rscf->on_line,
                                  &addr[a].opt.addr_text,
                                  addr[a].opt.http2 ? "http2"
                                                    : "proxy_protocol");
                    return NGX_ERROR;
                }

                if (first == NULL) {
                    first = rscf;
                }
            }

            if (first == NULL) {
                continue;
            }

            def = addr[a].default_server->ctx->srv_conf[
                      ngx_http_rktls_module.ctx_index];

            ra = ngx_array_push(&rmcf->addrs);
            if (ra == NULL) {
                return NGX_ERROR;
            }

            ra->sockaddr = addr[a].opt.sockaddr;
            ra->socklen = addr[a].opt.socklen;
            ra->default_server = addr[a].default_server;
            ra->fallback = def->config ? def : first;
        }
    }

    return NGX_OK;
}


/* After the http{} block made the listening sockets: wrap the handlers of
 * those rktls servers listen on. */

static ngx_int_t
ngx_http_rktls_init_module(ngx_cycle_t *cycle)
{
    ngx_uint_t                   i, j;
    ngx_listening_t             *ls;
    ngx_http_rktls_addr_t       *ra;
    ngx_http_rktls_main_conf_t  *rmcf;

    if (cycle->conf_ctx[ngx_http_module.index] == NULL) {
        return NGX_OK;
    }

    rmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_rktls_module);

    if (rmcf == NULL || rmcf->addrs.nelts == 0) {
        return NGX_OK;
    }

    ls = cycle->listening.elts;
    ra = rmcf->addrs.elts;

    for (i = 0; i < cycle->listening.nelts; i++) {
        if (ls[i].handler != ngx_http_init_connection) {
            continue;
        }

        for (j = 0; j < rmcf->addrs.nelts; j++) {
            if (ra[j].sockaddr->sa_family != ls[i].sockaddr->sa_family
                || ngx_inet_get_port(ra[j].sockaddr)
                   != ngx_inet_get_port(ls[i].sockaddr))
            {
                continue;
            }

            if (ngx_cmp_sockaddr(ra[j].sockaddr, ra[j].socklen,
                                 ls[i].sockaddr, ls[i].socklen, 1)
                == NGX_OK
                || ngx_inet_wildcard(ls[i].sockaddr))
            {
                ls[i].handler = ngx_http_rktls_init_connection;
                break;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_rktls_init_process(ngx_cycle_t *cycle)
{
    (void) rktls_set_log_callback(ngx_http_rktls_log, NULL, RKTLS_LOG_WARN);

    return ngx_http_rktls_init_worker(cycle);
}
