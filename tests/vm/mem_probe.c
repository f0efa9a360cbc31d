/*
 * How much userspace memory an established server connection holds, with
 * the record layer in userspace and in the kernel: N loopback connections
 * are handshaken (non-blocking, one thread), the client ends are freed,
 * and the heap still in use (mallinfo2) is divided by N.
 *
 *   mem_probe CERTDIR     prints "userspace: B bytes/conn" and
 *                         "ktls: B bytes/conn"; exits 1 unless the kernel
 *                         connections took the offload and hold less.
 */
#include <rktls.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define N 64

static long held(const char *dir, uint32_t ktls, int *offloaded)
{
    char cert[512], key[512], ca[512];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    rktls_server_config_builder *sb;
    const rktls_server_config *scfg;
    rktls_server_config_builder_new(&sb);
    rktls_server_config_builder_add_cert_key_files(sb, cert, key);
    rktls_server_config_builder_set_ktls(sb, ktls);
    rktls_server_config_builder_build(sb, &scfg);
    rktls_client_config_builder *cb;
    const rktls_client_config *ccfg;
    rktls_client_config_builder_new(&cb);
    rktls_client_config_builder_add_roots_file(cb, ca);
    rktls_client_config_builder_build(cb, &ccfg);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    bind(ls, (struct sockaddr *)&sa, sizeof sa);
    listen(ls, N);
    getsockname(ls, (struct sockaddr *)&sa, &sl);

    static int cfd[N], sfd[N];
    static rktls_connection *c[N], *s[N];
    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < N; i++) {
        cfd[i] = socket(AF_INET, SOCK_STREAM, 0);
        connect(cfd[i], (struct sockaddr *)&sa, sizeof sa);
        sfd[i] = accept(ls, NULL, NULL);
        fcntl(cfd[i], F_SETFL, O_NONBLOCK);
        fcntl(sfd[i], F_SETFL, O_NONBLOCK);
        rktls_client_connection_new(ccfg, "localhost", &c[i]);
        rktls_server_connection_new(scfg, &s[i]);
        rktls_connection_set_fd(c[i], cfd[i]);
        rktls_connection_set_fd(s[i], sfd[i]);
        rktls_result rc = RKTLS_WANT_READ, rs = RKTLS_WANT_READ;
        for (int round = 0; round < 1000 && (rc != RKTLS_OK || rs != RKTLS_OK); round++) {
            if (rc != RKTLS_OK)
                rc = rktls_connection_handshake(c[i]);
            if (rs != RKTLS_OK)
                rs = rktls_connection_handshake(s[i]);
            if (rktls_result_category(rc) > RKTLS_CATEGORY_WOULD_BLOCK ||
                rktls_result_category(rs) > RKTLS_CATEGORY_WOULD_BLOCK) {
                fprintf(stderr, "handshake failed: %s / %s\n", rktls_result_str(rc),
                        rktls_result_str(rs));
                exit(1);
            }
        }
        if (rc != RKTLS_OK || rs != RKTLS_OK) {
            fprintf(stderr, "handshake did not finish: %s / %s\n", rktls_result_str(rc), rktls_result_str(rs));
            exit(1);
        }
        *offloaded += rktls_connection_ktls_tx(s[i]) && rktls_connection_ktls_rx(s[i]);
    }
    for (int i = 0; i < N; i++)
        rktls_connection_free(c[i]);
    struct mallinfo2 after = mallinfo2();
    long per = (long)(after.uordblks - before.uordblks) / N;
    for (int i = 0; i < N; i++) {
        rktls_connection_free(s[i]);
        close(cfd[i]);
        close(sfd[i]);
    }
    close(ls);
    rktls_server_config_free(scfg);
    rktls_client_config_free(ccfg);
    return per;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: mem_probe CERTDIR\n");
        return 2;
    }
    int off_offloaded = 0, k_offloaded = 0;
    held(argv[1], RKTLS_KTLS_REQUIRE, &k_offloaded); /* warm up: probes, caches */
    k_offloaded = 0;
    long user = held(argv[1], RKTLS_KTLS_OFF, &off_offloaded);
    long kern = held(argv[1], RKTLS_KTLS_REQUIRE, &k_offloaded);
    printf("userspace: %ld bytes/conn\nktls: %ld bytes/conn (%d of %d offloaded)\n", user, kern,
           k_offloaded, N);
    return !(k_offloaded == N && off_offloaded == 0 && kern < user);
}
