/*
 * ngx_http_rktls_module, the rktls side of the configuration: the rktls_*
 * directives' values and the rktls server config built from them, with
 * errors that name the directive, the file and the reason.
 */

#include "ngx_http_rktls.h"


/* The protocol names of rktls_protocols and the versions rktls takes. */
static struct {
    ngx_str_t  name;
    uint16_t   version;
} ngx_http_rktls_protocol_names[] = {
    { ngx_string("TLSv1.2"), 0x0303 },
    { ngx_string("TLSv1.3"), 0x0304 },
};


ngx_str_t *
ngx_http_rktls_protocol_name(uint16_t version)
{
    ngx_uint_t  i;

    for (i = 0; i < 2; i++) {
        if (ngx_http_rktls_protocol_names[i].version == version) {
            return &ngx_http_rktls_protocol_names[i].name;
        }
    }

    return NULL;
}


char *
ngx_http_rktls_on(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rktls_srv_conf_t  *rscf = conf;

    char  *rv;

    rv = ngx_conf_set_flag_slot(cf, cmd, conf);

    if (rv == NGX_CONF_OK) {
        rscf->on_file = cf->conf_file->file.name.data;
        rscf->on_line = cf->conf_file->line;
    }

    return rv;
}


char *
ngx_http_rktls_certificate_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_rktls_srv_conf_t  *rscf = conf;

    ngx_str_t  *value, *key, *where;

    value = cf->args->elts;

    if (rscf->certificate_keys == NGX_CONF_UNSET_PTR) {
        rscf->certificate_keys = ngx_array_create(cf->pool, 2,
                                                  sizeof(ngx_str_t));
        rscf->cert_where = ngx_array_create(cf->pool, 2, sizeof(ngx_str_t));
        if (rscf->certificate_keys == NULL || rscf->cert_where == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    key = ngx_array_push(rscf->certificate_keys);
    where = ngx_array_push(rscf->cert_where);
    if (key == NULL || where == NULL) {
        return NGX_CONF_ERROR;
    }

    *key = value[1];

    where->data = ngx_pnalloc(cf->pool, cf->conf_file->file.name.len
                                        + NGX_INT_T_LEN + 2);
    if (where->data == NULL) {
        return NGX_CONF_ERROR;
    }

    where->len = ngx_sprintf(where->data, "%V:%ui", &cf->conf_file->file.name,
                             cf->conf_file->line)
                 - where->data;

    return NGX_CONF_OK;
}


char *
ngx_http_rktls_protocols(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rktls_srv_conf_t  *rscf = conf;

    uint16_t    *ver;
    ngx_str_t   *value;
    ngx_uint_t   i, j;

    if (rscf->protocols) {
        return "is duplicate";
    }

    rscf->protocols = ngx_array_create(cf->pool, 2, sizeof(uint16_t));
    if (rscf->protocols == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        for (j = 0; j < 2; j++) {
            if (value[i].len == ngx_http_rktls_protocol_names[j].name.len
                && ngx_strncmp(value[i].data,
                               ngx_http_rktls_protocol_names[j].name.data,
                               value[i].len) == 0)
            {
                break;
            }
        }

        if (j == 2) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "unknown protocol \"%V\" in \"%V\": rktls "
                               "supports TLSv1.2 and TLSv1.3",
                               &value[i], &cmd->name);
            return NGX_CONF_ERROR;
        }

        ver = ngx_array_push(rscf->protocols);
        if (ver == NULL) {
            return NGX_CONF_ERROR;
        }

        *ver = ngx_http_rktls_protocol_names[j].version;
    }

    return NGX_CONF_OK;
}


/* Cipher suites by their IANA names ("TLS_AES_128_GCM_SHA256") or OpenSSL's
 * ("ECDHE-RSA-AES128-GCM-SHA256"), several arguments or one colon-separated
 * list, in preference order. */

char *
ngx_http_rktls_ciphers(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_rktls_srv_conf_t  *rscf = conf;

    u_char      *p, *end, *start;
    char         name[64];
    size_t       len;
    uint16_t    *id, suite;
    ngx_str_t   *value;
    ngx_uint_t   i;

    if (rscf->ciphers) {
        return "is duplicate";
    }

    rscf->ciphers = ngx_array_create(cf->pool, 8, sizeof(uint16_t));
    if (rscf->ciphers == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {
        p = value[i].data;
        end = p + value[i].len;

        while (p < end) {
            start = p;
            while (p < end && *p != ':') {
                p++;
            }
            len = p - start;
            p++;

            if (len == 0) {
                continue;
            }

            /* a longer one names no suite */
            if (len < sizeof(name)) {
                ngx_memcpy(name, start, len);
                name[len] = '\0';
            }

            if (len >= sizeof(name)
                || rktls_cipher_suite_from_name(name, &suite) != RKTLS_OK)
            {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "unknown cipher suite \"%*s\" in \"%V\" "
                                   "(use IANA names such as "
                                   "TLS_AES_128_GCM_SHA256 or OpenSSL's "
                                   "such as ECDHE-RSA-AES128-GCM-SHA256)",
                                   len, start, &cmd->name);
                return NGX_CONF_ERROR;
            }

            id = ngx_array_push(rscf->ciphers);
            if (id == NULL) {
                return NGX_CONF_ERROR;
            }

            *id = suite;
        }
    }

    return NGX_CONF_OK;
}


static void
ngx_http_rktls_config_cleanup(void *data)
{
    rktls_server_config_free(data);
}


static char *
ngx_http_rktls_fail(ngx_conf_t *cf, ngx_http_rktls_srv_conf_t *rscf,
    const char *directive, ngx_str_t *file, ngx_str_t *where, rktls_result r)
{
    char    msg[512];
    size_t  n;

    msg[0] = '\0';
    (void) rktls_last_error_message(msg, sizeof(msg), &n);

    if (file) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "%s \"%V\" in %V: %s: %s", directive, file, where,
                      rktls_result_str(r), msg);

    } else {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "%s for \"rktls on\" in %s:%ui: %s: %s", directive,
                      rscf->on_file, rscf->on_line, rktls_result_str(r), msg);
    }

    return NGX_CONF_ERROR;
}


/* rktls_session_ticket_key FILE (several): the first seals new tickets,
 * each opens the tickets sealed under it, so every worker and every server
 * with the same files resumes the others' sessions. */

static char *
ngx_http_rktls_ticket_keys(ngx_conf_t *cf, ngx_http_rktls_srv_conf_t *rscf,
    rktls_server_config_builder *b)
{
#if (NGX_HTTP_RKTLS_TICKET_KEYS_FILE)

    ngx_str_t     *files, name;
    ngx_uint_t     i;
    const char   **paths;
    rktls_result   r;

    if (!rscf->session_tickets) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"rktls_session_ticket_key\" needs "
                      "\"rktls_session_tickets on\" (\"rktls on\" in %s:%ui)",
                      rscf->on_file, rscf->on_line);
        return NGX_CONF_ERROR;
    }

    files = rscf->ticket_keys->elts;
    paths = ngx_palloc(cf->pool, rscf->ticket_keys->nelts * sizeof(char *));
    if (paths == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < rscf->ticket_keys->nelts; i++) {
        name = files[i];

        if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        paths[i] = (const char *) name.data;
    }

    r = rktls_server_config_builder_set_ticket_keys_file(b, paths,
                                                        rscf->ticket_keys->nelts);
    if (r != RKTLS_OK) {
        return ngx_http_rktls_fail(cf, rscf, "rktls_session_ticket_key", NULL,
                                   NULL, r);
    }

    return NGX_CONF_OK;

#else

    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "\"rktls_session_ticket_key\" (\"rktls on\" in %s:%ui) needs "
                  "an rktls with rktls_server_config_builder_set_ticket_keys_"
                  "file(); the librktls this module was built with has none",
                  rscf->on_file, rscf->on_line);
    return NGX_CONF_ERROR;

#endif
}


/* Build the server{}'s rktls config; each failure names directive, file and
 * reason (rktls' own message names the file and the problem). */

char *
ngx_http_rktls_build(ngx_conf_t *cf, ngx_http_rktls_srv_conf_t *rscf)
{
    static const uint8_t  alpn[] = "\x08http/1.1";

    ngx_str_t                    *certs, *keys, *where, cert, key;
    ngx_uint_t                    i;
    rktls_result                  r;
    ngx_pool_cleanup_t           *cln;
    rktls_server_config_builder  *b;

    if (rscf->certificates == NULL || rscf->certificates->nelts == 0) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"rktls_certificate\" is defined for \"rktls on\" "
                      "in %s:%ui", rscf->on_file, rscf->on_line);
        return NGX_CONF_ERROR;
    }

    certs = rscf->certificates->elts;

    if (rscf->certificate_keys == NULL
        || rscf->certificate_keys->nelts < rscf->certificates->nelts)
    {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "no \"rktls_certificate_key\" is defined for "
                      "\"rktls_certificate\" \"%V\" (\"rktls on\" in %s:%ui)",
                      &certs[rscf->certificate_keys
                             ? rscf->certificate_keys->nelts : 0],
                      rscf->on_file, rscf->on_line);
        return NGX_CONF_ERROR;
    }

    keys = rscf->certificate_keys->elts;
    where = rscf->cert_where->elts;

    if (rscf->certificate_keys->nelts > rscf->certificates->nelts) {
        ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                      "\"rktls_certificate_key\" \"%V\" in %V has no "
                      "\"rktls_certificate\"",
                      &keys[rscf->certificates->nelts],
                      &where[rscf->certificates->nelts]);
        return NGX_CONF_ERROR;
    }

    if (rktls_server_config_builder_new(&b) != RKTLS_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < rscf->certificates->nelts; i++) {
        cert = certs[i];
        key = keys[i];

        if (ngx_conf_full_name(cf->cycle, &cert, 1) != NGX_OK
            || ngx_conf_full_name(cf->cycle, &key, 1) != NGX_OK)
        {
            rktls_server_config_builder_free(b);
            return NGX_CONF_ERROR;
        }

        r = rktls_server_config_builder_add_cert_key_files(
                b, (const char *) cert.data, (const char *) key.data);

        if (r != RKTLS_OK) {
            rktls_server_config_builder_free(b);
            return ngx_http_rktls_fail(cf, rscf,
                                       r == RKTLS_ERR_CONFIG_KEY_MISMATCH
                                       || r == RKTLS_ERR_CONFIG_FILE
                                       ? "rktls_certificate_key"
                                       : "rktls_certificate/_key",
                                       &key, &where[i], r);
        }
    }

    r = rktls_server_config_builder_set_alpn(b, alpn, sizeof(alpn) - 1);

    if (r == RKTLS_OK && rscf->protocols) {
        r = rktls_server_config_builder_set_versions(b,
                rscf->protocols->elts, rscf->protocols->nelts);
    }

    if (r == RKTLS_OK && rscf->ciphers) {
        r = rktls_server_config_builder_set_cipher_suites(b,
                rscf->ciphers->elts, rscf->ciphers->nelts);
    }

    if (r == RKTLS_OK) {
        r = rktls_server_config_builder_set_ktls(b, (uint32_t) rscf->ktls);
    }

    if (r == RKTLS_OK) {
        r = rktls_server_config_builder_set_tickets(b,
                                                    rscf->session_tickets);
    }

    if (r != RKTLS_OK) {
        rktls_server_config_builder_free(b);
        return ngx_http_rktls_fail(cf, rscf, "rktls_* settings", NULL, NULL,
                                   r);
    }

    if (rscf->ticket_keys && rscf->ticket_keys->nelts) {
        if (ngx_http_rktls_ticket_keys(cf, rscf, b) != NGX_CONF_OK) {
            rktls_server_config_builder_free(b);
            return NGX_CONF_ERROR;
        }
    }

    r = rktls_server_config_builder_build(b, &rscf->config);

    if (r != RKTLS_OK) {
        return ngx_http_rktls_fail(cf, rscf,
                                   r == RKTLS_ERR_CONFIG_CIPHER_SUITES
                                   ? "rktls_ciphers" : "rktls_* settings",
                                   NULL, NULL, r);
    }

    cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        rktls_server_config_free(rscf->config);
        rscf->config = NULL;
        return NGX_CONF_ERROR;
    }

    cln->handler = ngx_http_rktls_config_cleanup;
    cln->data = (void *) rscf->config;

    return NGX_CONF_OK;
}
