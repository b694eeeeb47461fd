/*
 * The sd_notify protocol (see notify.h): one datagram per notification on
 * a socket opened and closed for it. Notifications are rare (start, a
 * move, stop), so no socket is kept open and nothing is shared.
 */
#include "node/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "kernels/err.h"

int shoal_notify_send_to(const char *path, const char *state)
{
    if (!path || !state)
        return SHOAL_ERR_ARG;
    size_t slen = strlen(state), plen = strlen(path);
    if (slen == 0 || slen >= SHOAL_NOTIFY_MAX)
        return SHOAL_ERR_ARG;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    /* "/path": NUL-terminated in sun_path; "@name": sun_path[0] = 0, then
     * the name's bytes, and the address length says where it ends */
    if (plen < 2 || (path[0] != '/' && path[0] != '@') || plen >= sizeof sa.sun_path)
        return SHOAL_ERR_ARG;
    memcpy(sa.sun_path, path, plen);
    if (path[0] == '@')
        sa.sun_path[0] = 0;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen +
                                 (path[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return SHOAL_ERR_IO;
    ssize_t n = sendto(fd, state, slen, MSG_NOSIGNAL, (const struct sockaddr *)&sa, alen);
    int saved = errno;
    close(fd);
    if (n != (ssize_t)slen) {
        errno = n < 0 ? saved : EMSGSIZE;
        return SHOAL_ERR_IO;
    }
    return 0;
}

int shoal_notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 1;
    return shoal_notify_send_to(path, state);
}

int shoal_notify_sendf(const char *fmt, ...)
{
    char buf[SHOAL_NOTIFY_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf)
        return SHOAL_ERR_ARG;
    return shoal_notify_send(buf);
}
