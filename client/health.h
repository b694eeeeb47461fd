/*
 * Peer health: which peers a client should leave alone for a while, and how
 * fast the others answer.
 *
 * A peer that failed (an error, a lost connection, silence) is banned: the
 * first time for ban_ms, and each failure that follows while the peer is
 * still remembered as failing doubles the ban, up to ban_max_ms. A peer is
 * forgotten as failing once forget_ms have passed since its last ban ended
 * without a new failure; its next ban is short again. A ban may be lifted
 * early (the peer answered INFO again: it restarted); the failure count
 * stays, so a peer that keeps failing is banned longer each time.
 *
 * Round-trip times are kept as an exponentially weighted mean per peer, for
 * route planning to read.
 *
 * Peers are named by their address (proto/addr.h canonical form). Time is
 * passed in by the caller (milliseconds on any monotonic clock), so the
 * table is tested with a made-up clock; nothing here reads a clock, a
 * socket or a file.
 *
 * Ownership: the table copies the addresses it is given. Size: at most
 * SHOAL_HEALTH_MAX peers; when full, the entry of the peer that was
 * neither banned nor failing for the longest time is reused.
 *
 * THREAD SAFETY: a table belongs to one thread at a time.
 */
#ifndef SHOAL_CLIENT_HEALTH_H
#define SHOAL_CLIENT_HEALTH_H

#include <stddef.h>

#define SHOAL_HEALTH_MAX 4096

typedef struct shoal_health shoal_health;

typedef struct shoal_health_params {
    double ban_ms;     /* the first ban */
    double ban_max_ms; /* bans double up to this */
    double forget_ms;  /* a peer with no failure this long after its ban
                          ended starts over */
} shoal_health_params;

/* ban 2 s, at most 60 s, forgotten after 120 s. */
shoal_health_params shoal_health_params_default(void);

/* p may be NULL (the defaults). SHOAL_ERR_NOMEM, SHOAL_ERR_ARG for
 * non-positive or inconsistent times. */
int shoal_health_new(const shoal_health_params *p, shoal_health **out);

/* Accepts NULL; clears *h. */
void shoal_health_destroy(shoal_health **h);

/* Record a failure of address at now_ms and ban it. Returns the length of
 * the ban in ms (0 when the table could not record it). */
double shoal_health_ban(shoal_health *h, const char *address, double now_ms);

/* Milliseconds left of address's ban at now_ms; 0 when it may be used. */
double shoal_health_banned_for(const shoal_health *h, const char *address, double now_ms);

/* End address's ban now (it proved alive); its failure count stays. */
void shoal_health_lift(shoal_health *h, const char *address);

/* Failures recorded for address and not yet forgotten (at now_ms). */
int shoal_health_failures(const shoal_health *h, const char *address, double now_ms);

/* A round trip of rtt_ms to address: folded into its mean (weight 1/4). */
void shoal_health_rtt_add(shoal_health *h, const char *address, double rtt_ms);

/* The mean round trip to address in ms, or -1 when none was measured. */
double shoal_health_rtt(const shoal_health *h, const char *address);

#endif
