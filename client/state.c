/* The state poller behind the dashboard (see state.h). */
#include "client/state.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/swarmview.h"
#include "kernels/err.h"
#include "swarm/log.h"

struct shoal_state {
    shoal_state_params p;
    char **initial;
    char *model_path;
    pthread_t thread;
    pthread_mutex_t mu;        /* everything below */
    pthread_cond_t wake;       /* the poller: read now, or stop */
    pthread_cond_t fresh;      /* requests: a read ended */
    bool stopping;
    double last_interest;      /* monotonic s of the last request */
    bool want_now;
    json_t *model;             /* the latest model object, or NULL */
    double view_at;            /* monotonic s of that view */
    int64_t view_ms;           /* Unix ms of that view */
    uint64_t reads;            /* reads ended */
    char error[512];           /* the last read's error, "" if it worked */
};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int64_t unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void deadline_in(struct timespec *ts, double s)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    double t = (double)ts->tv_sec + ts->tv_nsec * 1e-9 + s;
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

shoal_state_params shoal_state_params_default(void)
{
    return (shoal_state_params){
        .interval_s = 5, .idle_s = 60, .wait_s = 8, .timeout_ms = 3000};
}

static void *poller_main(void *arg)
{
    shoal_state *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        double now = mono_s();
        bool watched = now - s->last_interest < s->p.idle_s;
        bool due = s->want_now || (watched && (!s->model || now - s->view_at >= s->p.interval_s));
        if (!due) {
            struct timespec ts;
            double wait = watched ? s->p.interval_s - (now - s->view_at) : 3600;
            deadline_in(&ts, wait > 0.05 ? wait : 0.05);
            pthread_cond_timedwait(&s->wake, &s->mu, &ts);
            continue;
        }
        s->want_now = false;
        pthread_mutex_unlock(&s->mu);

        shoal_swarm_view v = {.path = s->model_path};
        char err[512] = "";
        json_t *model = NULL;
        int rc = shoal_swarm_view_read(&v, (const char *const *)s->initial, s->p.n_initial,
                                       &s->p.id, s->p.nblocks, s->p.timeout_ms, 0, err,
                                       sizeof err);
        if (!rc && !(model = shoal_swarm_view_json(&v)))
            snprintf(err, sizeof err, "out of memory");
        shoal_swarm_view_free(&v);

        pthread_mutex_lock(&s->mu);
        s->reads++;
        if (model) {
            json_decref(s->model);
            s->model = model;
            s->view_at = mono_s();
            s->view_ms = unix_ms();
            s->error[0] = 0;
        } else {
            if (strcmp(s->error, err))
                SHOAL_LOG_W("state: cannot read the swarm: %s", err);
            snprintf(s->error, sizeof s->error, "%s", err);
            s->view_at = mono_s(); /* a failed read waits an interval too */
        }
        pthread_cond_broadcast(&s->fresh);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int shoal_state_start(const shoal_state_params *p, shoal_state **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!p->n_initial || !p->initial || !(p->interval_s > 0) || !(p->idle_s > 0) ||
        !(p->wait_s >= 0) || p->timeout_ms < 1 || !p->nblocks) {
        snprintf(err, errlen, "state: bad parameters");
        return SHOAL_ERR_ARG;
    }
    shoal_state *s = calloc(1, sizeof *s);
    if (!s || !(s->initial = calloc(p->n_initial, sizeof *s->initial)))
        goto nomem;
    s->p = *p;
    for (size_t i = 0; i < p->n_initial; i++)
        if (!(s->initial[i] = strdup(p->initial[i])))
            goto nomem;
    if (p->model_path && !(s->model_path = strdup(p->model_path)))
        goto nomem;
    s->p.initial = NULL;
    s->p.model_path = NULL;
    s->last_interest = -1e9;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->wake, &ca);
    pthread_cond_init(&s->fresh, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&s->thread, NULL, poller_main, s)) {
        pthread_cond_destroy(&s->wake);
        pthread_cond_destroy(&s->fresh);
        pthread_mutex_destroy(&s->mu);
        goto nomem;
    }
    *out = s;
    return 0;
nomem:
    if (s) {
        for (size_t i = 0; s->initial && i < p->n_initial; i++)
            free(s->initial[i]);
        free(s->initial);
        free(s->model_path);
        free(s);
    }
    snprintf(err, errlen, "out of memory");
    return SHOAL_ERR_NOMEM;
}

char *shoal_state_json(shoal_state *s, json_t *self)
{
    pthread_mutex_lock(&s->mu);
    double now = mono_s();
    s->last_interest = now;
    if (!s->model || now - s->view_at > 2 * s->p.interval_s) {
        uint64_t reads = s->reads;
        s->want_now = true;
        pthread_cond_signal(&s->wake);
        struct timespec ts;
        deadline_in(&ts, s->p.wait_s);
        while (s->reads == reads && !s->stopping)
            if (pthread_cond_timedwait(&s->fresh, &s->mu, &ts))
                break;
    }
    const char *status = s->error[0] ? "error" : s->model ? "ok" : "reading";
    json_t *models = json_array();
    if (models && s->model)
        json_array_append(models, s->model);
    double age = s->model ? mono_s() - s->view_at : 0;
    json_t *doc = json_pack("{s:s+,s:I,s:f,s:f,s:s,s:o,s:o}", "software", "shoal ",
                            SHOAL_VERSION, "generated_ms", (json_int_t)(s->model ? s->view_ms : 0),
                            "age_s", age, "refresh_s", s->p.interval_s, "status", status, "self",
                            self ? self : json_object(), "models",
                            models ? models : json_array());
    if (doc && s->error[0])
        json_object_set_new(doc, "error", json_string(s->error));
    pthread_mutex_unlock(&s->mu);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}

void shoal_state_stop(shoal_state **p)
{
    shoal_state *s = *p;
    if (!s)
        return;
    *p = NULL;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_broadcast(&s->wake);
    pthread_cond_broadcast(&s->fresh);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->fresh);
    pthread_mutex_destroy(&s->mu);
    json_decref(s->model);
    for (size_t i = 0; i < s->p.n_initial; i++)
        free(s->initial[i]);
    free(s->initial);
    free(s->model_path);
    free(s);
}
