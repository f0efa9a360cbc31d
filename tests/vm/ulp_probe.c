/*
 * ulp_probe: does this kernel offer kernel TLS?
 *
 * Makes a TCP connection over 127.0.0.1, attaches the "tls" ULP to the client
 * end, installs a TLS 1.3 AES-GCM-128 TX state (all-zero key), writes "hello"
 * and checks that the peer receives one encrypted TLS record, not plaintext.
 *
 * Prints ULP-OK, TX-OK and RECORD-OK on success (exit 0); otherwise a FAIL line
 * naming the step and errno (exit 1). On a kernel without kTLS the ULP step
 * fails with ENOENT.
 *
 * Build: gcc -Wall -Wextra -Werror -O2 -o ulp_probe tests/vm/ulp_probe.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

static void fail(const char *step)
{
    int e = errno;
    const char *name = strerrorname_np(e);
    printf("FAIL %s: errno=%d %s (%s)\n", step, e, name ? name : "?", strerror(e));
    exit(1);
}

int main(void)
{
    alarm(20); /* bound every wait: loopback should take milliseconds */
    setvbuf(stdout, NULL, _IOLBF, 0);

    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0) fail("socket");
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof addr;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("bind 127.0.0.1:0");
    if (listen(lfd, 1) < 0) fail("listen");
    if (getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) fail("getsockname");

    int cfd = socket(AF_INET, SOCK_STREAM, 0);
    if (cfd < 0) fail("socket");
    if (connect(cfd, (struct sockaddr *)&addr, sizeof addr) < 0) fail("connect");
    int sfd = accept(lfd, NULL, NULL);
    if (sfd < 0) fail("accept");

    if (setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0) fail("setsockopt(TCP_ULP, \"tls\")");
    printf("ULP-OK\n");

    struct tls12_crypto_info_aes_gcm_128 ci;
    memset(&ci, 0, sizeof ci); /* zero key, iv, salt and record sequence */
    ci.info.version = TLS_1_3_VERSION;
    ci.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    if (setsockopt(cfd, SOL_TLS, TLS_TX, &ci, sizeof ci) < 0) fail("setsockopt(SOL_TLS, TLS_TX)");

    ssize_t n = write(cfd, "hello", 5);
    if (n < 0) fail("write");
    if (n != 5) { printf("FAIL write: wrote %zd of 5 bytes\n", n); return 1; }
    printf("TX-OK\n");

    /* TLS 1.3 record: 5-byte header, 5 data bytes + 1 content type + 16-byte tag. */
    unsigned char rec[64] = { 0 };
    size_t got = 0, want = 5 + 5 + 1 + 16;
    struct timeval tv = { .tv_sec = 5 };
    if (setsockopt(sfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0) fail("setsockopt(SO_RCVTIMEO)");
    while (got < want) {
        ssize_t r = read(sfd, rec + got, sizeof rec - got);
        if (r < 0) fail("read on peer");
        if (r == 0) break;
        got += (size_t)r;
    }
    static const unsigned char hdr[5] = { 0x17, 0x03, 0x03, 0x00, 0x16 };
    if (got != want || memcmp(rec, hdr, sizeof hdr) != 0 || memmem(rec, got, "hello", 5)) {
        printf("FAIL record: peer got %zu bytes, header %02x %02x %02x %02x %02x\n", got,
               rec[0], rec[1], rec[2], rec[3], rec[4]);
        return 1;
    }
    printf("RECORD-OK %zu bytes, header 17 03 03 00 16, ciphertext\n", got);
    close(cfd);
    close(sfd);
    close(lfd);
    return 0;
}
