/*
 * node/notify.h against a real AF_UNIX datagram socket, as systemd uses
 * it: a file-system socket and an abstract one ("@name"), the sender's pid
 * seen through SCM_CREDENTIALS (what NotifyAccess=main checks), no
 * $NOTIFY_SOCKET (nothing sent), and every bad argument refused.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../check.h"
#include "kernels/err.h"
#include "node/notify.h"

/* A datagram socket bound at path ("/..." or "@..."), passing credentials. */
static int listen_at(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = 0;
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                 (path[0] == '/' ? 1 : 0));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&sa, alen)) {
        perror("listen_at");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* One datagram into buf (NUL-terminated), the sender's pid into *pid;
 * its length, or -1 when none came within a second. */
static ssize_t receive(int fd, char *buf, size_t size, pid_t *pid)
{
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, 1000) != 1)
        return -1;
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {buf, size - 1};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = &ctl;
    m.msg_controllen = sizeof ctl;
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
    if (n < 0)
        return -1;
    buf[n] = 0;
    *pid = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred cr;
            memcpy(&cr, CMSG_DATA(c), sizeof cr);
            *pid = cr.pid;
        }
    return n;
}

static void test_path_socket(void)
{
    char dir[] = "/tmp/shoal-notify-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/notify.sock", dir);
    int fd = listen_at(path);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    setenv("NOTIFY_SOCKET", path, 1);
    CHECK(shoal_notify_send("READY=1\nSTATUS=serving blocks 0:5") == 0);
    char buf[SHOAL_NOTIFY_MAX + 16];
    pid_t pid = 0;
    ssize_t n = receive(fd, buf, sizeof buf, &pid);
    CHECK(n == (ssize_t)strlen("READY=1\nSTATUS=serving blocks 0:5"));
    CHECK(n > 0 && strcmp(buf, "READY=1\nSTATUS=serving blocks 0:5") == 0);
    CHECK_MSG(pid == getpid(), "sender pid %d, expected %d", (int)pid, (int)getpid());

    CHECK(shoal_notify_sendf("STATUS=%s %d:%d", "moving to", 2, 4) == 0);
    n = receive(fd, buf, sizeof buf, &pid);
    CHECK(n > 0 && strcmp(buf, "STATUS=moving to 2:4") == 0);

    /* the longest notification goes through whole; one byte more is refused */
    char *big = malloc(SHOAL_NOTIFY_MAX + 1);
    CHECK(big != NULL);
    if (big) {
        memset(big, 'x', SHOAL_NOTIFY_MAX);
        memcpy(big, "STATUS=", 7);
        big[SHOAL_NOTIFY_MAX - 1] = 0;
        CHECK(shoal_notify_send(big) == 0);
        n = receive(fd, buf, sizeof buf, &pid);
        CHECK(n == SHOAL_NOTIFY_MAX - 1);
        big[SHOAL_NOTIFY_MAX - 1] = 'x';
        big[SHOAL_NOTIFY_MAX] = 0;
        CHECK(shoal_notify_send(big) == SHOAL_ERR_ARG);
        CHECK(shoal_notify_sendf("%s", big) == SHOAL_ERR_ARG);
        free(big);
    }
    CHECK(shoal_notify_send("") == SHOAL_ERR_ARG);
    CHECK(receive(fd, buf, sizeof buf, &pid) < 0); /* nothing else was sent */

    close(fd);
    unlink(path);
    /* nobody listens there any more */
    errno = 0;
    CHECK(shoal_notify_send("READY=1") == SHOAL_ERR_IO);
    CHECK(errno == ENOENT || errno == ECONNREFUSED);
    rmdir(dir);
    unsetenv("NOTIFY_SOCKET");
}

static void test_abstract_socket(void)
{
    unsigned r = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (f) {
        if (fread(&r, sizeof r, 1, f) != 1)
            r = 0;
        fclose(f);
    }
    char name[108];
    snprintf(name, sizeof name, "@shoal/test-notify/%d/%08x", (int)getpid(), r);
    int fd = listen_at(name);
    CHECK(fd >= 0);
    if (fd < 0)
        return;
    setenv("NOTIFY_SOCKET", name, 1);
    CHECK(shoal_notify_send("STOPPING=1") == 0);
    char buf[256];
    pid_t pid = 0;
    CHECK(receive(fd, buf, sizeof buf, &pid) == 10);
    CHECK(strcmp(buf, "STOPPING=1") == 0);
    CHECK(pid == getpid());
    /* a longer or shorter abstract name is another socket: not delivered here */
    char other[112];
    snprintf(other, sizeof other, "%sx", name);
    CHECK(shoal_notify_send_to(other, "READY=1") == SHOAL_ERR_IO);
    CHECK(receive(fd, buf, sizeof buf, &pid) < 0);
    close(fd);
    unsetenv("NOTIFY_SOCKET");
}

static void test_no_socket_and_bad_paths(void)
{
    unsetenv("NOTIFY_SOCKET");
    CHECK(shoal_notify_send("READY=1") == 1);
    CHECK(shoal_notify_sendf("READY=%d", 1) == 1);
    setenv("NOTIFY_SOCKET", "", 1);
    CHECK(shoal_notify_send("READY=1") == 1);
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    CHECK(shoal_notify_send("READY=1") == SHOAL_ERR_ARG);
    CHECK(shoal_notify_send_to("@", "READY=1") == SHOAL_ERR_ARG);
    CHECK(shoal_notify_send_to("/", "READY=1") == SHOAL_ERR_ARG);
    CHECK(shoal_notify_send_to("vsock:2:1234", "READY=1") == SHOAL_ERR_ARG);
    CHECK(shoal_notify_send_to(NULL, "READY=1") == SHOAL_ERR_ARG);
    CHECK(shoal_notify_send_to("/tmp/x", NULL) == SHOAL_ERR_ARG);
    char lng[200];
    memset(lng, 'a', sizeof lng - 1);
    lng[0] = '/';
    lng[sizeof lng - 1] = 0;
    CHECK(shoal_notify_send_to(lng, "READY=1") == SHOAL_ERR_ARG); /* over sun_path */
    lng[0] = '@';
    CHECK(shoal_notify_send_to(lng, "READY=1") == SHOAL_ERR_ARG);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    test_path_socket();
    test_abstract_socket();
    test_no_socket_and_bad_paths();
    return check_done();
}
