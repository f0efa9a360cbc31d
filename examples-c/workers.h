/*
 * workers.h: the pre-fork model of nginx for the example servers. The
 * parent opens the listening socket and builds its configs, then forks N
 * workers that all accept on that socket (the kernel hands each connection
 * to one of them); the parent only supervises: it forwards SIGTERM, SIGINT
 * and SIGHUP to every worker and exits once they all have.
 */
#ifndef RKTLS_EXAMPLE_WORKERS_H
#define RKTLS_EXAMPLE_WORKERS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS_MAX 64

static pid_t worker_pids[WORKERS_MAX];
static int worker_count;

/* The signals the parent forwards (and SIGCHLD); blocked before forking so
 * that workers inherit the mask and take them through their signalfd. */
static inline void workers_signals(sigset_t *mask)
{
    sigemptyset(mask);
    sigaddset(mask, SIGTERM);
    sigaddset(mask, SIGINT);
    sigaddset(mask, SIGHUP);
    sigaddset(mask, SIGCHLD);
}

/* Fork n workers: returns 0 in each worker, 1 in the parent (which then
 * calls workers_supervise()). Exits if a fork fails, after stopping the
 * workers already started. */
static inline int workers_start(int n)
{
    sigset_t mask;
    workers_signals(&mask);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    fflush(stdout); /* or buffered output would be printed by every worker */
    for (worker_count = 0; worker_count < n; worker_count++) {
        pid_t p = fork();
        if (p == 0)
            return 0;
        if (p < 0) {
            perror("fork");
            for (int i = 0; i < worker_count; i++)
                kill(worker_pids[i], SIGTERM);
            exit(1);
        }
        worker_pids[worker_count] = p;
    }
    return 1;
}

/* The parent's loop: forward signals, reap workers; exits when none is left
 * (status 0 if every worker exited 0). */
static inline void workers_supervise(void)
{
    sigset_t mask;
    workers_signals(&mask);
    int alive = worker_count, failed = 0, status, sig;
    pid_t p;
    while (alive > 0) {
        if (sigwait(&mask, &sig) != 0)
            continue;
        if (sig != SIGCHLD)
            for (int i = 0; i < worker_count; i++)
                kill(worker_pids[i], sig);
        while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
            alive--;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                failed = 1;
                printf("worker %d ended with status 0x%x\n", (int)p, status);
                fflush(stdout);
            }
        }
    }
    exit(failed);
}

#endif
