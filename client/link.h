/*
 * A link: the client's connection to one node, built for a caller that
 * waits on many nodes at once and must notice quickly when one of them is
 * gone. client/remote.c drives a chain of links; nothing else needs this.
 *
 * A link is one DEALER socket (CURVE, the node's key taken from its
 * address, swarm/transport.h) plus a monitor of that socket, so that:
 *
 *   - a node that dies (kill -9, a crash, a restart) is seen at once: the
 *     kernel closes its TCP connection and the monitor reports it
 *     (shoal_link_drops() counts the connections lost since open);
 *   - a node that hangs (SIGSTOP, a stuck machine) is seen within the
 *     liveness time: while the caller waits for an answer, the link pings
 *     the node every liveness/4 ms, and a node that answers nothing at all
 *     (neither the request nor the pings) for liveness ms is dead. A node's
 *     I/O thread answers PING while its workers compute, so a long step is
 *     not mistaken for a hang; a step that is merely slow is bounded by the
 *     caller's own deadline.
 *
 * Nothing here blocks: sends are non-blocking (a socket that cannot take a
 * message now fails with SHOAL_ERR_BUSY), receives take what is waiting.
 * The caller polls the items shoal_link_poll_items() gives, then calls
 * shoal_link_service() for each link, which drains the monitor, answers
 * nothing, consumes PING replies and hands back at most one other message.
 *
 * Requests carry ids the caller chooses; a reply is matched by the caller.
 * Tensors: shoal_link_send() encodes an f32 (n, dim) tensor in the codec
 * asked for (the reply is asked back in the same codec) into a buffer the
 * link keeps, so a steady loop allocates nothing.
 *
 * THREAD SAFETY: a link belongs to one thread at a time.
 */
#ifndef SHOAL_CLIENT_LINK_H
#define SHOAL_CLIENT_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <zmq.h>

#include "proto/addr.h"
#include "proto/wire.h"
#include "swarm/transport.h"

typedef struct shoal_link shoal_link;

/* Monotonic milliseconds (the clock every link time is on). */
double shoal_link_now(void);

/* Parse address and connect (asynchronously: this never waits for the
 * node). zctx is the caller's ZeroMQ context (transport.h), which must
 * outlive the link. SHOAL_ERR_FORMAT for a bad address, SHOAL_ERR_IO,
 * SHOAL_ERR_NOMEM. */
int shoal_link_open(void *zctx, const char *address, shoal_link **out);

/* Close the sockets (unsent messages dropped); accepts NULL, clears *l. */
void shoal_link_destroy(shoal_link **l);

/* The canonical address, owned by the link. */
const char *shoal_link_address(const shoal_link *l);

/* Connections to the node lost since open (the node died or restarted). */
unsigned shoal_link_drops(const shoal_link *l);

/* Connection attempts refused while no connection is up (0 once one is):
 * nothing listens at the address now. */
unsigned shoal_link_refused(const shoal_link *l);

/* Send request h (its request_id set by the caller), with the tensor x
 * (n, dim) f32 encoded in codec when x is not NULL (descriptor and reply
 * codec are added to a copy of h). 0, SHOAL_ERR_ARG (bad header or
 * tensor), SHOAL_ERR_RANGE (x holds NaN/Inf or overflows the codec),
 * SHOAL_ERR_NOMEM, SHOAL_ERR_BUSY (the socket's queue is full),
 * SHOAL_ERR_IO. */
int shoal_link_send(shoal_link *l, const shoal_wire_header *h, const float *x, uint32_t n,
                    uint32_t dim, int codec);

/* Start waiting for an answer at now: silence is counted from here (or
 * from the last message heard, if later). */
void shoal_link_await(shoal_link *l, double now);

/* Stop waiting (no pings are sent while idle). */
void shoal_link_idle(shoal_link *l);

/* The two poll items of the link (its socket and its monitor), for
 * zmq_poll. */
void shoal_link_poll_items(shoal_link *l, zmq_pollitem_t items[2]);

/* Take what is waiting on the link at now: monitor events (counted) and
 * messages. PING replies are consumed. The first other message is decoded
 * into *h with its frames moved into *m (tensor frames from m->frame[1]
 * on); the caller closes m. Returns 0 (a message), SHOAL_ERR_TIMEOUT
 * (nothing for the caller), SHOAL_ERR_PROTOCOL (a message that did not
 * decode: dropped; its request id, when readable, is in h->request_id),
 * or SHOAL_ERR_IO. Call again until it returns TIMEOUT. */
int shoal_link_service(shoal_link *l, double now, shoal_transport_msg *m,
                       shoal_wire_header *h);

/* While awaiting: send a PING when one is due. Returns 0, or
 * SHOAL_ERR_TIMEOUT when nothing at all was heard from the node for
 * liveness_ms. */
int shoal_link_tick(shoal_link *l, double now, double liveness_ms);

/* When the next PING is due or the node times out, whichever is first
 * (ms on the link clock); a large value when not awaiting. */
double shoal_link_next_due(const shoal_link *l, double liveness_ms);

/* Decode tensor frame `frame` (>= 1) of message m, described by
 * h->tensors[frame - 1], into out, checking its shape is (n, dim). 0 or
 * SHOAL_ERR_PROTOCOL. */
int shoal_link_take_tensor(const shoal_wire_header *h, shoal_transport_msg *m, int frame,
                           float *out, uint32_t n, uint32_t dim);

#endif
