/* bench/spawn.c: run one per-connection handler N times over a real loopback TCP connection and
 * report what each process cost, from wait4(2)'s rusage.
 *
 * Why C: ru_maxrss of a child includes the memory of the process it was forked from (the kernel
 * carries the pre-exec mm's high-water mark over exec), so a handler forked from a Python harness
 * would report the harness's RSS. This launcher is small, so what it reports is the handler's.
 *
 *   spawn N QUERY -- ARGV...
 *
 * Each run: listen on 127.0.0.1:0, connect, accept; the accepted socket becomes fd 0 and fd 1 of
 * the child (as systemd's StandardInput=socket does), with REMOTE_ADDR/REMOTE_PORT set; the
 * client sends QUERY (CRLF appended), half-closes and reads the answer to EOF. Output, one line
 * per run: "utime_us stime_us maxrss_kb wall_us answer_bytes exit_status".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "--") != 0) {
        fprintf(stderr, "usage: spawn N QUERY -- ARGV...\n");
        return 2;
    }
    int runs = atoi(argv[1]);
    char query[1024];
    snprintf(query, sizeof query, "%s\r\n", argv[2]);
    char **child_argv = argv + 4;
    if (runs < 1 || runs > 100000) {
        fprintf(stderr, "spawn: N must be 1..100000\n");
        return 2;
    }

    int lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lsock < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lsock, 16) < 0) die("listen");
    socklen_t alen = sizeof addr;
    if (getsockname(lsock, (struct sockaddr *)&addr, &alen) < 0) die("getsockname");

    for (int i = 0; i < runs; i++) {
        int client = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (client < 0) die("socket");
        long long started = now_us();
        if (connect(client, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int conn = accept4(lsock, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC);
        if (conn < 0) die("accept");
        char port[16];
        snprintf(port, sizeof port, "%u", ntohs(peer.sin_port));
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) {
            dup2(conn, 0);  /* dup2 clears FD_CLOEXEC on the copies */
            dup2(conn, 1);
            setenv("REMOTE_ADDR", "127.0.0.1", 1);
            setenv("REMOTE_PORT", port, 1);
            execv(child_argv[0], child_argv);
            _exit(127);
        }
        close(conn);
        size_t qlen = strlen(query);
        if (write(client, query, qlen) != (ssize_t)qlen) die("write");
        shutdown(client, SHUT_WR);
        char buf[65536];
        long total = 0;
        ssize_t n;
        while ((n = read(client, buf, sizeof buf)) > 0) total += n;
        close(client);
        int status;
        struct rusage ru;
        if (wait4(pid, &status, 0, &ru) < 0) die("wait4");
        long long wall = now_us() - started;
        printf("%ld %ld %ld %lld %ld %d\n",
               (long)(ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec),
               (long)(ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec),
               ru.ru_maxrss, wall, total, WIFEXITED(status) ? WEXITSTATUS(status) : 128);
        fflush(stdout);
    }
    return 0;
}
