/*
 * Service-manager notifications (the sd_notify protocol) without
 * libsystemd: a node run as a systemd Type=notify service tells systemd
 * when it is ready (READY=1, once its blocks are online in the swarm),
 * what it is doing (STATUS=...) and that it is stopping (STOPPING=1).
 *
 * The protocol: the service manager puts the path of an AF_UNIX datagram
 * socket in $NOTIFY_SOCKET, either a file-system path ("/run/...") or an
 * abstract name ("@name": the leading '@' stands for the NUL byte that
 * starts an abstract address). Each notification is one datagram of
 * newline-separated VAR=VALUE assignments. The receiver learns the
 * sender's pid from the kernel (SCM_CREDENTIALS), so a service with
 * NotifyAccess=main may send from any thread of its main process.
 *
 * Without $NOTIFY_SOCKET (not run by a service manager, or under one
 * that does not ask) every call does nothing and returns 1, so callers
 * notify unconditionally. Nothing here logs: a failed notification is
 * the caller's to report (or, usually, to ignore: systemd times out).
 *
 * Threads: no state; any thread may call at any time (getenv is read, and
 * the environment must not be changed concurrently, as always).
 */
#ifndef SHOAL_NODE_NOTIFY_H
#define SHOAL_NODE_NOTIFY_H

#include <stddef.h>

#define SHOAL_NOTIFY_MAX 4096 /* longest notification, in bytes */

/* Send `state` (e.g. "READY=1\nSTATUS=serving blocks 0:5") to the
 * socket named in $NOTIFY_SOCKET. 0: sent; 1: no $NOTIFY_SOCKET, nothing
 * done; SHOAL_ERR_ARG: an empty or over-long state, or a NOTIFY_SOCKET
 * that is neither an absolute path nor "@name" or is too long for an
 * AF_UNIX address; SHOAL_ERR_IO: the socket or the send failed (errno
 * says why). */
int shoal_notify_send(const char *state);

/* As shoal_notify_send, the state formatted printf-style; SHOAL_ERR_ARG
 * when the result is longer than SHOAL_NOTIFY_MAX - 1. */
int shoal_notify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The same, to the socket `path` ("/..." or "@..."), whatever the
 * environment says (tests, and callers that saved $NOTIFY_SOCKET). */
int shoal_notify_send_to(const char *path, const char *state);

#endif
