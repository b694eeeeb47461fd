/* Shared pieces of the node commands (see daemon.h). */
#include "node/daemon.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kernels/err.h"
#include "swarm/log.h"

bool node_daemon_is_wildcard(const char *h)
{
    return !strcmp(h, "0.0.0.0") || !strcmp(h, "*") || !strcmp(h, "::") || !strcmp(h, "[::]");
}

void node_daemon_public_host(const char *listen, char *out, size_t size)
{
    int v6 = strchr(listen, ':') != NULL;
    snprintf(out, size, "%s", v6 ? "::1" : "127.0.0.1");
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs))
        return;
    for (int pass = 0; pass < 2; pass++) {
        int want = pass == 0 ? (v6 ? AF_INET6 : AF_INET) : (v6 ? AF_INET : AF_INET6);
        for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
            if (!i->ifa_addr || i->ifa_addr->sa_family != want || !(i->ifa_flags & IFF_UP) ||
                (i->ifa_flags & IFF_LOOPBACK))
                continue;
            const void *a = want == AF_INET
                                ? (const void *)&((struct sockaddr_in *)i->ifa_addr)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
            if (want == AF_INET6 && IN6_IS_ADDR_LINKLOCAL((const struct in6_addr *)a))
                continue; /* would need a zone id */
            char buf[INET6_ADDRSTRLEN];
            if (inet_ntop(want, a, buf, sizeof buf)) {
                snprintf(out, size, "%s", buf);
                freeifaddrs(ifs);
                return;
            }
        }
    }
    freeifaddrs(ifs);
}

int node_daemon_identity(const char *cmd, const char *path, shoal_identity **id)
{
    int rc = shoal_identity_load(id, path);
    if (rc == SHOAL_ERR_IO && errno == ENOENT) {
        if ((rc = shoal_identity_generate(id)))
            return rc;
        if ((rc = shoal_identity_save(*id, path))) {
            fprintf(stderr, "shoal %s: cannot create %s: %s\n", cmd, path, strerror(errno));
            shoal_identity_destroy(id);
            return rc;
        }
        SHOAL_LOG_I("created identity %s", path);
        return 0;
    }
    if (rc == SHOAL_ERR_AUTH)
        fprintf(stderr, "shoal %s: %s may be read by others: treat it as leaked, or "
                        "chmod 600 it\n", cmd, path);
    else if (rc == SHOAL_ERR_IO)
        fprintf(stderr, "shoal %s: cannot read %s: %s\n", cmd, path, strerror(errno));
    else if (rc)
        fprintf(stderr, "shoal %s: %s is not a shoal identity file\n", cmd, path);
    return rc;
}

int node_daemon_write_atomic(const char *path, const char *text)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid()) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t len = strlen(text);
    int ok = write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}
