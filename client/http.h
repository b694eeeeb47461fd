/*
 * Small pieces shared by Shoal's HTTP servers (the API, client/api.h, and
 * the node's status port, client/statusd.h), both on libmicrohttpd.
 *
 * THREAD SAFETY: thread-safe.
 */
#ifndef SHOAL_CLIENT_HTTP_H
#define SHOAL_CLIENT_HTTP_H

#include <microhttpd.h>
#include <stddef.h>

/* Listen on host:port (a name or address; port 0: any free port) with a
 * thread per connection, at most max_connections at once, idle
 * connections closed after timeout_s. *bound_port gets the port. NULL with
 * one line in err when host does not resolve or the port is taken. */
struct MHD_Daemon *shoal_http_listen(const char *host, int port, unsigned max_connections,
                                     unsigned timeout_s, MHD_AccessHandlerCallback handler,
                                     void *cls, MHD_RequestCompletedCallback done,
                                     void *done_cls, int *bound_port, char *err,
                                     size_t errlen);

/* Queue body (malloc'ed, len bytes; freed here, also on failure) with
 * status and content type; allow (may be NULL) is the Allow header of a
 * 405. Adds CORS (any origin may read: the data is public) and
 * Cache-Control: no-store. */
enum MHD_Result shoal_http_send(struct MHD_Connection *c, int status, const char *type,
                                char *body, size_t len, const char *allow);

#endif
