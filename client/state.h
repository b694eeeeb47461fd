/*
 * The swarm's state for the dashboard and GET /api/v1/state: a poller
 * thread that reads the swarm's view of one model (client/swarmview.h)
 * every interval while someone is looking, and hands out the latest as
 * JSON.
 *
 * Reading the swarm joins the DHT and probes every server, so the poller
 * works only on demand: a request marks interest; after `idle_s` without
 * one it sleeps. A request that finds no view, or one older than twice the
 * interval, wakes the poller and waits for the next view (at most
 * `wait_s`); otherwise it gets the latest at once.
 *
 * The document (one JSON object):
 *   {"software": "shoal X.Y.Z", "generated_ms": Unix ms of the view (0: none
 *    yet), "age_s", "refresh_s", "status": "ok" | "reading" | "error",
 *    "error": the last read's error (when status is "error"),
 *    "self": what the serving process says of itself (caller's object),
 *    "models": [the model's object, swarmview.h]}
 *
 * THREAD SAFETY: shoal_state_json from any thread at once; start and stop
 * from one thread.
 */
#ifndef SHOAL_CLIENT_STATE_H
#define SHOAL_CLIENT_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "swarm/model_id.h"

typedef struct shoal_state shoal_state;

typedef struct shoal_state_params {
    const char *const *initial; /* DHT nodes to read through (copied) */
    size_t n_initial;
    shoal_model_id id;          /* the model */
    uint32_t nblocks;
    const char *model_path;     /* for the JSON; may be NULL (copied) */
    double interval_s;          /* between reads while watched: 5 */
    double idle_s;              /* stop reading this long after the last request: 60 */
    double wait_s;              /* a request waits this long for a fresh view: 8 */
    int timeout_ms;             /* joining and reading the records: 3000 */
} shoal_state_params;

/* interval 5 s, idle 60 s, wait 8 s, timeout 3 s; no peers, no model. */
shoal_state_params shoal_state_params_default(void);

/* Start the poller (it reads nothing until asked). SHOAL_ERR_ARG for no
 * initial peer or bad times, SHOAL_ERR_NOMEM; one line in err. */
int shoal_state_start(const shoal_state_params *p, shoal_state **out, char *err, size_t errlen);

/* The document above as a new string (free()); self (may be NULL) is
 * stolen. NULL for no memory. */
char *shoal_state_json(shoal_state *s, json_t *self);

/* Stop the poller (waits for a read in progress, bounded by its
 * timeouts). Accepts NULL; clears *s. */
void shoal_state_stop(shoal_state **s);

/* The dashboard: one self-contained HTML page (no outside resources) that
 * fetches /api/v1/state relative to itself every few seconds and draws it
 * (client/dashboard.c). */
extern const char shoal_dashboard_html[];

#endif
