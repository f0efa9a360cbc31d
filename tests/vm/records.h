/* Helpers shared by the kTLS VM test programs (control.c, rekey_peer.c):
 * whole writes and bounded reads through rktls, and raw records on an
 * offloaded socket through the kernel's record-type control messages. */
#ifndef RKTLS_VM_RECORDS_H
#define RKTLS_VM_RECORDS_H

#include <rktls.h>

#include <linux/tls.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

/* 0, or the rktls_result of the write that failed (printed). */
static int write_all(rktls_connection *c, const char *d, size_t n)
{
    while (n > 0) {
        size_t w = 0;
        rktls_result r = rktls_connection_write(c, (const uint8_t *)d, n, &w);
        if (r != RKTLS_OK) {
            printf("  write: %s\n", rktls_result_str(r));
            return (int)r;
        }
        d += w;
        n -= w;
    }
    return 0;
}

/* Read until `want` bytes or a non-OK result, which is returned. */
static rktls_result read_upto(rktls_connection *c, char *buf, size_t want, size_t *got)
{
    *got = 0;
    while (*got < want) {
        size_t n = 0;
        rktls_result r = rktls_connection_read(c, (uint8_t *)buf + *got, want - *got, &n);
        if (r != RKTLS_OK)
            return r;
        *got += n;
    }
    return RKTLS_OK;
}

/* sendmsg of one record of `type` on a TX-offloaded socket. */
static int send_record(int fd, uint8_t type, const void *data, size_t len)
{
    char cbuf[CMSG_SPACE(1)];
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_TLS;
    c->cmsg_type = TLS_SET_RECORD_TYPE;
    c->cmsg_len = CMSG_LEN(1);
    *CMSG_DATA(c) = type;
    return sendmsg(fd, &m, 0) == (ssize_t)len ? 0 : -1;
}

/* recvmsg of one record on an RX-offloaded socket: its type, or -1. */
static int recv_record(int fd, void *buf, size_t cap, size_t *len)
{
    char cbuf[CMSG_SPACE(1)];
    struct iovec iov = {.iov_base = buf, .iov_len = cap};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    ssize_t n = recvmsg(fd, &m, 0);
    if (n < 0)
        return -1;
    *len = (size_t)n;
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    if (c && c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
        return *CMSG_DATA(c);
    return 23;
}

#endif
