/*
 * Helpers for tests that run real nodes: start `shoal serve` (the binary
 * the build made, SHOAL_BINARY) on 127.0.0.1 with --port 0 and an address
 * file, wait (bounded) for the address, stop it by PID with a bounded wait.
 * Children get PR_SET_PDEATHSIG, so a test that crashes leaves no node
 * behind; node_reap_all() kills whatever is left at the end.
 */
#ifndef SHOAL_TESTS_NODE_SPAWN_H
#define SHOAL_TESTS_NODE_SPAWN_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proto/addr.h"

#define NODE_SPAWN_MAX 16

typedef struct node_proc {
    pid_t pid;
    char addr[SHOAL_ADDR_MAX];
    char addr_file[128];
} node_proc;

static pid_t node_spawned_[NODE_SPAWN_MAX];
static char node_files_[NODE_SPAWN_MAX][128];
static int node_nspawned_;

/* pid has been reaped: never signal that number again */
static void node_forget_(pid_t pid)
{
    for (int i = 0; i < node_nspawned_; i++)
        if (node_spawned_[i] == pid)
            node_spawned_[i] = 0;
}

static double node_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void node_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Start `shoal serve -m MODEL --blocks blocks --host 127.0.0.1 --port 0 -t 1
 * --address-file F extra...` and wait up to 30 s for its address. */
static int node_spawn(node_proc *np, const char *model, const char *blocks,
                      const char *const *extra)
{
    static int counter;
    memset(np, 0, sizeof *np);
    snprintf(np->addr_file, sizeof np->addr_file, "/tmp/shoal-test-%d-%d.addr", (int)getpid(),
             counter++);
    unlink(np->addr_file);
    const char *argv[48];
    int a = 0;
    const char *fixed[] = {SHOAL_BINARY, "serve", "-m", model, "--blocks", blocks, "--host",
                           "127.0.0.1", "--port", "0", "-t", "1", "--log-level", "warn",
                           "--address-file", np->addr_file};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[a++] = fixed[i];
    for (int i = 0; extra && extra[i] && a < 46; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            dup2(devnull, 1);
        execv(SHOAL_BINARY, (char *const *)argv);
        _exit(127);
    }
    np->pid = pid;
    if (node_nspawned_ < NODE_SPAWN_MAX) {
        snprintf(node_files_[node_nspawned_], sizeof node_files_[0], "%s", np->addr_file);
        node_spawned_[node_nspawned_++] = pid;
    }
    double deadline = node_now_ms() + 30000;
    while (node_now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "node %s exited early (status %d)\n", blocks, st);
            node_forget_(pid);
            np->pid = 0;
            return -1;
        }
        FILE *f = fopen(np->addr_file, "r");
        if (f) {
            char line[SHOAL_ADDR_MAX + 2] = "";
            int ok = fgets(line, sizeof line, f) != NULL;
            fclose(f);
            line[strcspn(line, "\n")] = 0;
            if (ok && line[0]) {
                snprintf(np->addr, sizeof np->addr, "%s", line);
                return 0;
            }
        }
        node_sleep_ms(20);
    }
    fprintf(stderr, "node %s gave no address within 30 s\n", blocks);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    node_forget_(pid);
    np->pid = 0;
    return -1;
}

/* Send sig, wait up to timeout_ms for the exit. Returns the wait status,
 * or -1 if it had to be killed. */
static int node_stop(node_proc *np, int sig, int timeout_ms)
{
    if (np->pid <= 0)
        return -1;
    kill(np->pid, sig);
    double deadline = node_now_ms() + timeout_ms;
    int st = -1;
    for (;;) {
        pid_t r = waitpid(np->pid, &st, WNOHANG);
        if (r == np->pid)
            break;
        if (node_now_ms() > deadline) {
            kill(np->pid, SIGKILL);
            waitpid(np->pid, NULL, 0);
            st = -1;
            break;
        }
        node_sleep_ms(10);
    }
    node_forget_(np->pid);
    unlink(np->addr_file);
    np->pid = 0;
    return st;
}

static void node_reap_all(void)
{
    for (int i = 0; i < node_nspawned_; i++) {
        if (node_spawned_[i] > 0) {
            kill(node_spawned_[i], SIGKILL);
            waitpid(node_spawned_[i], NULL, 0);
            node_spawned_[i] = 0;
        }
        unlink(node_files_[i]);
    }
}

#endif
