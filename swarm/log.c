/* Leveled logging with a replaceable sink (see log.h). */
#include "swarm/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 1024

/* The process-wide settings (see log.h: set at start, read by every thread). */
static atomic_int log_level = SHOAL_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static shoal_log_sink log_sink;
static void *log_sink_ctx;
static int log_fd = -1; /* the default sink's file (shoal_log_set_file); -1: stderr */

void shoal_log_set_level(int level)
{
    if (level < SHOAL_LOG_DEBUG)
        level = SHOAL_LOG_DEBUG;
    if (level > SHOAL_LOG_OFF)
        level = SHOAL_LOG_OFF;
    atomic_store(&log_level, level);
}

int shoal_log_get_level(void) { return atomic_load(&log_level); }

bool shoal_log_enabled(int level)
{
    return level >= atomic_load_explicit(&log_level, memory_order_relaxed) &&
           level < SHOAL_LOG_OFF;
}

void shoal_log_set_sink(shoal_log_sink sink, void *ctx)
{
    pthread_mutex_lock(&log_mu);
    log_sink = sink;
    log_sink_ctx = ctx;
    pthread_mutex_unlock(&log_mu);
}

int shoal_log_set_file(const char *path)
{
    int fd = -1;
    if (path && (fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return -1;
    pthread_mutex_lock(&log_mu);
    int old = log_fd;
    log_fd = fd;
    pthread_mutex_unlock(&log_mu);
    if (old >= 0)
        close(old);
    return 0;
}

int shoal_log_level_from_name(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; name && i < 5; i++)
        if (!strcmp(name, names[i]))
            return i;
    return -1;
}

/* The default sink, called under log_mu: standard error or log_fd. */
static void default_sink(int level, const char *line)
{
    static const char tag[] = "DIWE";
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    char out[LOG_LINE_MAX + 64];
    int n = snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ shoal[%d] %c: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), (int)getpid(), tag[level & 3], line);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof out ? (size_t)n : sizeof out - 1;
    int saved = errno; /* logging never changes errno under the caller */
    if (log_fd < 0)
        fwrite(out, 1, len, stderr);
    for (size_t off = 0; log_fd >= 0 && off < len;) {
        ssize_t w = write(log_fd, out + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* a full disk loses log lines, never the program */
        off += (size_t)w;
    }
    errno = saved;
}

void shoal_log(int level, const char *fmt, ...)
{
    if (!shoal_log_enabled(level))
        return;
    char line[LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* one line per call: a peer-supplied string must not forge another */
    for (char *p = line; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    pthread_mutex_lock(&log_mu);
    if (log_sink)
        log_sink(log_sink_ctx, level, line);
    else
        default_sink(level, line);
    pthread_mutex_unlock(&log_mu);
}
