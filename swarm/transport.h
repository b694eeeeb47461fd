/*
 * The ZeroMQ transport: thin wrappers that set up sockets the one way Shoal
 * uses them, and move multipart messages in and out within fixed bounds.
 *
 *   server  ROUTER, CURVE server with the node's key (derived from its
 *           Ed25519 identity, proto/identity.h), IPv6 on, ZMQ_MAXMSGSIZE
 *           capping every frame, ZMQ_ROUTER_MANDATORY off (a reply to a
 *           client that vanished is dropped, never blocks), linger 0.
 *   client  DEALER, CURVE client with a fresh ephemeral keypair, expecting
 *           the server key named by the node's address (proto/addr.h), so a
 *           client that was given the wrong key never completes the
 *           handshake and a non-CURVE peer never gets a byte from a server.
 *   ZAP     an optional in-process ZAP handler (RFC 27) that accepts every
 *           CURVE client and sets the message property "User-Id" to the
 *           client's public key (Z85), so a server can tie sessions to the
 *           client that opened them.
 *
 * A message on a server socket is [routing id][header][tensor]...; on a
 * client socket [header][tensor].... shoal_transport_recv() takes at most
 * max_frames frames of at most max_total bytes together; a message that is
 * bigger is read to its end and dropped whole (SHOAL_ERR_FORMAT), so a peer
 * can never make a receiver hold more than those bounds. Frames are kept as
 * zmq_msg_t, so tensor payloads are decoded where libzmq put them.
 *
 * Nothing here logs a key.
 *
 * THREAD SAFETY: a ZeroMQ socket belongs to one thread at a time; a context
 * may be shared by any number of threads.
 */
#ifndef SHOAL_SWARM_TRANSPORT_H
#define SHOAL_SWARM_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "proto/addr.h"
#include "proto/identity.h"

/* routing id + header + 4 tensor frames (SHOAL_WIRE_MAX_TENSORS) */
#define SHOAL_TRANSPORT_MAX_FRAMES 6

/* The ZAP domain servers use. */
#define SHOAL_TRANSPORT_ZAP_DOMAIN "shoal"

typedef struct shoal_transport_msg {
    int nframes;
    zmq_msg_t frame[SHOAL_TRANSPORT_MAX_FRAMES];
} shoal_transport_msg;

/* A byte range to send as one frame (not owned). */
typedef struct shoal_transport_part {
    const void *data;
    size_t len;
} shoal_transport_part;

/* A ZeroMQ context for Shoal's sockets (1 I/O thread, non-blocking
 * termination). NULL on failure. Free with zmq_ctx_term(). */
void *shoal_transport_ctx_new(void);

/* Open a ROUTER socket bound to tcp://host:port (port 0: a free port) as a
 * CURVE server with id's key. max_frame caps each inbound frame (bytes).
 * On success *sock is the socket and *bound_port the port it listens on.
 * SHOAL_ERR_IO (with a line in err) when the socket cannot be set up or
 * bound, SHOAL_ERR_UNSUPPORTED when libzmq lacks CURVE. */
int shoal_transport_server_open(void *zctx, const shoal_identity *id, const char *host,
                                int port, int64_t max_frame, void **sock, int *bound_port,
                                char *err, size_t errlen);

/* Open a DEALER socket connected to the node at a, as a CURVE client with
 * an ephemeral keypair that expects a's key. Connecting is asynchronous:
 * this never waits for the node; a peer that is down or goes away is
 * retried after 100 ms, doubling up to 2 s (never a steady stream of
 * connection attempts). SHOAL_ERR_IO / _UNSUPPORTED / _FORMAT. */
int shoal_transport_client_open(void *zctx, const shoal_addr *a, int64_t max_frame,
                                void **sock);

/* Close a socket (linger 0: unsent messages are dropped); accepts NULL and
 * clears the pointer. */
void shoal_transport_close(void **sock);

void shoal_transport_msg_init(shoal_transport_msg *m);
/* Close every frame; m is empty (nframes 0) afterwards. */
void shoal_transport_msg_close(shoal_transport_msg *m);

/* Receive one multipart message into m (which must be empty). flags:
 * 0 or ZMQ_DONTWAIT. Returns 0; SHOAL_ERR_TIMEOUT when nothing is waiting
 * (ZMQ_DONTWAIT); SHOAL_ERR_FORMAT when the message had more than
 * max_frames frames (<= SHOAL_TRANSPORT_MAX_FRAMES) or more than max_total
 * bytes: it was read to its end and dropped, m is empty; SHOAL_ERR_IO when
 * the socket failed (e.g. the context is terminating). */
int shoal_transport_recv(void *sock, shoal_transport_msg *m, int max_frames, size_t max_total,
                         int flags);

/* Send parts[0..n) as one multipart message, without blocking
 * (ZMQ_DONTWAIT). SHOAL_ERR_BUSY when the socket cannot take it now,
 * SHOAL_ERR_IO on other failures. */
int shoal_transport_send(void *sock, const shoal_transport_part *parts, int n);

/* Send the frames of m as one multipart message (zero copy: the frames are
 * handed to libzmq); m is empty afterwards whether or not it was sent.
 * flags: 0 (may block) or ZMQ_DONTWAIT. Same returns as above. */
int shoal_transport_send_msg(void *sock, shoal_transport_msg *m, int flags);

/* The client key a ZAP handler attached to a received frame (Z85, 40
 * characters), or NULL when there is none. Owned by the frame. */
const char *shoal_transport_user_id(zmq_msg_t *frame);

/* Bind the context's ZAP handler socket (inproc://zeromq.zap.01; one per
 * context). The caller polls it and calls shoal_transport_zap_serve() when
 * it is readable; until then CURVE handshakes wait. */
int shoal_transport_zap_open(void *zctx, void **sock);

/* Answer one waiting ZAP request, if any: CURVE clients are accepted with
 * their key as user id, anything else is refused. Returns 0, or
 * SHOAL_ERR_TIMEOUT when no request was waiting. */
int shoal_transport_zap_serve(void *zap);

#endif
