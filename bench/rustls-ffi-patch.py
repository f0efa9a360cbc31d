#!/usr/bin/env python3
"""Patch rustls-ffi's example server (tests/server.c, tests/common.h) for the
benchmarks. Usage: rustls-ffi-patch.py SRC_DIR (a copy of the published crate).

Every change is an exact text replacement; the script fails if any expected
text is missing, so a new rustls-ffi release cannot be patched silently wrong.
The changes (also listed in BENCHMARKS.md):
  1. port: from the environment variable PORT (0 = any free port) instead of
     the fixed 8443, and a "READY port=N" line on stdout once listening;
  2. logging: with -DBENCH_QUIET the LOG macro prints nothing, and the
     per-connection rustls log callback is not installed (rktls's example is
     measured with --quiet, too);
  3. body: BODY_BYTES (environment, default 10000 as before) bytes of 'a',
     queued in 64 KiB pieces as rustls accepts them whenever the loop comes
     round, instead of one malloc'd response written at once (which fails past
     rustls's buffer limit). The stray '\\n' after the body is dropped.
Everything else (the select loop, non-blocking reads until EAGAIN, closing
without close_notify after the response, the VECTORED_IO switch) is theirs.
"""
import sys
from pathlib import Path

src = Path(sys.argv[1])


def patch(rel, pairs):
    path = src / rel
    text = path.read_text()
    for old, new in pairs:
        if text.count(old) != 1:
            sys.exit(f"rustls-ffi-patch: {rel}: expected exactly one occurrence of:\n{old}")
        text = text.replace(old, new)
    path.write_text(text)


patch("tests/common.h", [(
    """#define LOG(f_, ...)                                                          \\
  fprintf(                                                                    \\
    stderr, "%s[%ld]: " f_ "\\n", programname, (long)getpid(), __VA_ARGS__)
""",
    """#ifdef BENCH_QUIET
#define LOG(f_, ...) ((void)0)
#else
#define LOG(f_, ...)                                                          \\
  fprintf(                                                                    \\
    stderr, "%s[%ld]: " f_ "\\n", programname, (long)getpid(), __VA_ARGS__)
#endif
""")])

patch("tests/server.c", [
    # 3. the body, streamed
    ("""demo_result
send_response(const conndata *conn)
{
  rustls_connection *rconn = conn->rconn;
  const char *prefix = "HTTP/1.1 200 OK\\r\\nContent-Length:";
  const int body_size = 10000;
  size_t response_size = strlen(prefix) + 15 + body_size;
  char *response = malloc(response_size);
  size_t n;

  if(response == NULL) {
    LOG_SIMPLE("failed malloc");
    return DEMO_ERROR;
  }

  n = snprintf(response, response_size, "%s %d\\r\\n\\r\\n", prefix, body_size);
  memset(response + n, 'a', body_size);
  *(response + n + body_size) = '\\n';
  *(response + n + body_size + 1) = '\\0';
  response_size = strlen(response);

  rustls_connection_write(rconn, (const uint8_t *)response, response_size, &n);

  free(response);
  if(n != response_size) {
    LOG("failed to write all response bytes. wrote %zu", n);
    return DEMO_ERROR;
  }
  return DEMO_OK;
}
""",
     """static long long bench_left; /* body bytes not yet given to rustls */
static char bench_chunk[65536];

/* Give rustls as much of the rest of the body as it takes now. */
static void
bench_fill(rustls_connection *rconn)
{
  size_t n;
  while(bench_left > 0) {
    size_t want = bench_left < (long long)sizeof(bench_chunk) ?
                    (size_t)bench_left :
                    sizeof(bench_chunk);
    if(rustls_connection_write(rconn, (const uint8_t *)bench_chunk, want, &n) !=
         RUSTLS_RESULT_OK ||
       n == 0) {
      return;
    }
    bench_left -= (long long)n;
  }
}

demo_result
send_response(const conndata *conn)
{
  rustls_connection *rconn = conn->rconn;
  const char *env = getenv("BODY_BYTES");
  const long long body_size = env ? atoll(env) : 10000;
  char head[128];
  size_t n;
  const int hl = snprintf(
    head, sizeof(head), "HTTP/1.1 200 OK\\r\\nContent-Length: %lld\\r\\n\\r\\n", body_size);

  rustls_connection_write(rconn, (const uint8_t *)head, (size_t)hl, &n);
  if(n != (size_t)hl) {
    LOG("failed to write all response bytes. wrote %zu", n);
    return DEMO_ERROR;
  }
  memset(bench_chunk, 'a', sizeof(bench_chunk));
  bench_left = body_size;
  bench_fill(rconn);
  return DEMO_OK;
}
"""),
    ("""  for(;;) {
    FD_ZERO(&read_fds);
""", """  for(;;) {
    if(state == SENT_RESPONSE) {
      bench_fill(rconn);
    }
    FD_ZERO(&read_fds);
"""),
    # 1. the port and the readiness line
    ("""  my_addr.sin_port = htons(8443);""",
     """  my_addr.sin_port = htons(getenv("PORT") ? atoi(getenv("PORT")) : 8443);"""),
    ("""  if(listen(sockfd, 50) == -1) {
    perror("server: listen");
    goto cleanup;
  }
""", """  if(listen(sockfd, 50) == -1) {
    perror("server: listen");
    goto cleanup;
  }
  {
    socklen_t alen = sizeof(my_addr);
    getsockname(sockfd, (struct sockaddr *)&my_addr, &alen);
    printf("READY port=%d\\n", ntohs(my_addr.sin_port));
    fflush(stdout);
  }
"""),
    # 2. no per-connection log callback when quiet
    ("""    rustls_connection_set_log_callback(rconn, log_cb);
""", """#ifndef BENCH_QUIET
    rustls_connection_set_log_callback(rconn, log_cb);
#endif
"""),
])
