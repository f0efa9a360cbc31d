/*
 * redis_cache.h: a TLS session cache in Redis for rktls servers, so that
 * several server processes (or machines) resume each other's sessions:
 * rktls_server_config_builder_set_session_cache() with hiredis callbacks.
 *
 * One Redis connection per process, made lazily on first use (so a server
 * that forks workers after configuring gets one connection per worker),
 * with a 100 ms connect and command timeout: a Redis that is down or slow
 * costs a handshake its resumption, never the handshake. After a failure
 * the connection is dropped and not retried for one second. Failures print
 * one "session-cache: ..." line. Single-threaded servers only (the
 * connection is not locked).
 *
 * Entries: key "rktls:" + the session id, value as rktls gives it, expiry
 * REDIS_CACHE_TTL seconds.
 */
#ifndef RKTLS_EXAMPLE_REDIS_CACHE_H
#define RKTLS_EXAMPLE_REDIS_CACHE_H

#include <hiredis/hiredis.h>
#include <rktls.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define REDIS_CACHE_TTL 3600
#define REDIS_CACHE_TIMEOUT_MS 100

struct redis_cache {
    const char *socket_path; /* Redis's Unix socket */
    redisContext *ctx;
    time_t retry_after;
};

static inline void redis_cache_log(const char *what, const char *err)
{
    printf("session-cache: redis %s failed: %s\n", what, err);
    fflush(stdout);
}

static inline redisContext *redis_cache_conn(struct redis_cache *rc)
{
    if (rc->ctx)
        return rc->ctx;
    if (time(NULL) < rc->retry_after)
        return NULL;
    struct timeval tv = {0, REDIS_CACHE_TIMEOUT_MS * 1000};
    redisContext *c = redisConnectUnixWithTimeout(rc->socket_path, tv);
    if (!c || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        redis_cache_log("connect", c ? c->errstr : "out of memory");
        redisFree(c);
        rc->retry_after = time(NULL) + 1;
        return NULL;
    }
    return rc->ctx = c;
}

/* Drop the connection after an error; retry in a second. */
static inline void redis_cache_fail(struct redis_cache *rc, const char *what, redisReply *r)
{
    redis_cache_log(what, r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply")
                            : rc->ctx->errstr);
    if (r)
        freeReplyObject(r);
    redisFree(rc->ctx);
    rc->ctx = NULL;
    rc->retry_after = time(NULL) + 1;
}

static inline int redis_cache_get(void *userdata, const uint8_t *key, size_t key_len, bool remove,
                                  uint8_t *buf, size_t buf_len, size_t *out_len)
{
    struct redis_cache *rc = userdata;
    redisContext *c = redis_cache_conn(rc);
    if (!c)
        return -1;
    /* GETDEL (Redis 6.2) makes a TLS 1.3 ticket single-use. */
    redisReply *r = redisCommand(c, remove ? "GETDEL rktls:%b" : "GET rktls:%b", key, key_len);
    if (!r || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
        redis_cache_fail(rc, "get", r);
        return -1;
    }
    int found = r->type == REDIS_REPLY_STRING && r->len <= buf_len;
    if (found) {
        memcpy(buf, r->str, r->len);
        *out_len = r->len;
    }
    freeReplyObject(r);
    return found;
}

static inline int redis_cache_put(void *userdata, const uint8_t *key, size_t key_len,
                                  const uint8_t *value, size_t value_len)
{
    struct redis_cache *rc = userdata;
    redisContext *c = redis_cache_conn(rc);
    if (!c)
        return -1;
    redisReply *r = redisCommand(c, "SET rktls:%b %b EX %d", key, key_len, value, value_len,
                                 REDIS_CACHE_TTL);
    if (!r || r->type != REDIS_REPLY_STATUS) {
        redis_cache_fail(rc, "put", r);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Keep `b`'s sessions in Redis (and turn stateless tickets off, so that
 * TLS 1.3 resumption goes through Redis too). `rc` must outlive the
 * configs built from `b`. */
static inline rktls_result redis_cache_install(rktls_server_config_builder *b,
                                               struct redis_cache *rc)
{
    rktls_result r = rktls_server_config_builder_set_session_cache(b, redis_cache_get,
                                                                   redis_cache_put, rc);
    return r != RKTLS_OK ? r : rktls_server_config_builder_set_tickets(b, false);
}

static inline void redis_cache_close(struct redis_cache *rc)
{
    redisFree(rc->ctx);
    rc->ctx = NULL;
}

#endif
