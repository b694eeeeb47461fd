/*
 * The project's one logging function. Libraries above kernels/ and proto/
 * (swarm, node, client) log through shoal_log(); kernels/ and proto/ never
 * log, they return errors.
 *
 * A line is formatted only when its level passes the threshold, then handed
 * to the sink: by default standard error, as
 *   2024-05-01T12:00:00.123Z shoal[1234] W: message
 * A program may send the lines to a file instead (--log-file) or replace
 * the sink (tests capture lines, a daemon may send them to syslog). The
 * threshold, the sink and the file are process-wide settings, the one
 * piece of global state the project allows, like ggml's log callback: set
 * them at start, before threads log.
 *
 * Never log keys, tokens, prompts or tensors: addresses, ids, sizes and
 * error codes only.
 *
 * THREAD SAFETY: shoal_log may be called from any thread at once; a sink is
 * called under a mutex, so it sees one line at a time.
 */
#ifndef SHOAL_SWARM_LOG_H
#define SHOAL_SWARM_LOG_H

#include <stdbool.h>

typedef enum shoal_log_level {
    SHOAL_LOG_DEBUG = 0,
    SHOAL_LOG_INFO = 1,
    SHOAL_LOG_WARN = 2,
    SHOAL_LOG_ERROR = 3,
    SHOAL_LOG_OFF = 4,
} shoal_log_level;

/* A sink receives one formatted line (no trailing newline). */
typedef void (*shoal_log_sink)(void *ctx, int level, const char *line);

/* Lines below `level` are dropped (default SHOAL_LOG_INFO). */
void shoal_log_set_level(int level);
int shoal_log_get_level(void);
bool shoal_log_enabled(int level);

/* Replace the sink; NULL restores the default (standard error, or the
 * file of shoal_log_set_file). */
void shoal_log_set_sink(shoal_log_sink sink, void *ctx);

/* The default sink appends its lines to the file at path (created 0644)
 * instead of standard error: one write() per line, so several processes
 * may share a file. NULL closes the file and returns to standard error.
 * 0, or -1 with errno set (the previous destination stays). */
int shoal_log_set_file(const char *path);

/* "debug", "info", "warn", "error", "off" -> level; -1 for anything else. */
int shoal_log_level_from_name(const char *name);

void shoal_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define SHOAL_LOG_D(...) shoal_log(SHOAL_LOG_DEBUG, __VA_ARGS__)
#define SHOAL_LOG_I(...) shoal_log(SHOAL_LOG_INFO, __VA_ARGS__)
#define SHOAL_LOG_W(...) shoal_log(SHOAL_LOG_WARN, __VA_ARGS__)
#define SHOAL_LOG_E(...) shoal_log(SHOAL_LOG_ERROR, __VA_ARGS__)

#endif
