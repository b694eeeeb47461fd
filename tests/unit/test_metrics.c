/*
 * Prometheus metrics: the exact text of a small registry (counters with
 * and without labels, a gauge, a histogram with cumulative buckets, label
 * values escaped), refusal of bad names and bounds, the series cap, and
 * counters updated from several threads at once adding up.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "swarm/metrics.h"

static const char *expected =
    "# HELP t_requests_total Requests, by route.\n"
    "# TYPE t_requests_total counter\n"
    "t_requests_total{route=\"/a\"} 3\n"
    "t_requests_total{route=\"q\\\"\\\\\\n\"} 1\n"
    "# HELP t_tokens_total Tokens.\\nTwo lines.\n"
    "# TYPE t_tokens_total counter\n"
    "t_tokens_total 2.5\n"
    "# HELP t_active Active.\n"
    "# TYPE t_active gauge\n"
    "t_active -1\n"
    "# HELP t_seconds Latency.\n"
    "# TYPE t_seconds histogram\n"
    "t_seconds_bucket{route=\"/a\",le=\"0.1\"} 1\n"
    "t_seconds_bucket{route=\"/a\",le=\"1\"} 3\n"
    "t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 4\n"
    "t_seconds_sum{route=\"/a\"} 7.8125\n"
    "t_seconds_count{route=\"/a\"} 4\n";

typedef struct worker {
    shoal_metrics *m;
    int id;
} worker;

static void *hammer(void *arg)
{
    worker *w = arg;
    const char *v[1] = {"x"};
    for (int i = 0; i < 10000; i++)
        shoal_metrics_inc(w->m, w->id, v, 1);
    return NULL;
}

int main(void)
{
    shoal_metrics *m = shoal_metrics_new();
    CHECK(m != NULL);
    const char *route[] = {"route"};
    const double bounds[] = {0.1, 1};
    int req = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "t_requests_total",
                                       "Requests, by route.", route, 1, NULL, 0);
    int tok = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "t_tokens_total",
                                       "Tokens.\nTwo lines.", NULL, 0, NULL, 0);
    int act = shoal_metrics_add_family(m, SHOAL_METRIC_GAUGE, "t_active", "Active.", NULL, 0,
                                       NULL, 0);
    int lat = shoal_metrics_add_family(m, SHOAL_METRIC_HISTOGRAM, "t_seconds", "Latency.", route,
                                       1, bounds, 2);
    CHECK(req == 0 && tok == 1 && act == 2 && lat == 3);

    /* refused: duplicate, bad names, reserved labels, bad bounds */
    const char *bad_label[] = {"le"}, *bad_label2[] = {"9x"}, *dunder[] = {"__x"};
    const double unsorted[] = {1, 0.5}, inf[] = {1, 1.0 / 0.0};
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "t_requests_total", "", NULL, 0, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "9bad", "", NULL, 0, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "a-b", "", NULL, 0, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "", "", NULL, 0, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "x1", "", bad_label, 1, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "x2", "", bad_label2, 1, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "x3", "", dunder, 1, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_HISTOGRAM, "x4", "", NULL, 0, unsorted, 2) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_HISTOGRAM, "x5", "", NULL, 0, inf, 2) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_HISTOGRAM, "x6", "", NULL, 0, NULL, 0) < 0);
    CHECK(shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "x7", "", NULL, 0, bounds, 2) < 0);
    CHECK(shoal_metrics_add_family(m, 9, "x8", "", NULL, 0, NULL, 0) < 0);

    const char *a[] = {"/a"}, *q[] = {"q\"\\\n"};
    shoal_metrics_inc(m, req, a, 1);
    shoal_metrics_inc(m, req, q, 1);
    shoal_metrics_inc(m, req, a, 2);
    shoal_metrics_inc(m, req, a, -5);   /* counters never go down */
    shoal_metrics_inc(m, req, NULL, 1); /* labels missing: ignored */
    shoal_metrics_inc(m, tok, NULL, 2.5);
    shoal_metrics_set(m, act, NULL, 4);
    shoal_metrics_inc(m, act, NULL, -5);
    shoal_metrics_observe(m, lat, a, 0.0625);
    shoal_metrics_observe(m, lat, a, 0.5);
    shoal_metrics_observe(m, lat, a, 1);    /* le is inclusive */
    shoal_metrics_observe(m, lat, a, 6.25);
    shoal_metrics_observe(m, req, a, 1);    /* wrong type: ignored */
    shoal_metrics_inc(m, lat, a, 1);        /* wrong type: ignored */
    shoal_metrics_inc(m, 99, NULL, 1);      /* no such family */
    CHECK(shoal_metrics_get(m, req, a) == 3);
    CHECK(shoal_metrics_get(m, lat, a) == 4);
    CHECK(shoal_metrics_get(m, act, NULL) == -1);

    char *text = NULL;
    size_t len = 0;
    CHECK(shoal_metrics_render(m, &text, &len) == 0);
    CHECK(text && len == strlen(text));
    CHECK_MSG(text && !strcmp(text, expected), "got:\n%s", text ? text : "(null)");
    free(text);

    /* a family holds at most SHOAL_METRICS_MAX_SERIES series */
    for (int i = 0; i < SHOAL_METRICS_MAX_SERIES + 10; i++) {
        char v[32];
        snprintf(v, sizeof v, "r%d", i);
        const char *vv[1] = {v};
        shoal_metrics_inc(m, req, vv, 1);
    }
    CHECK(shoal_metrics_dropped(m) == 12); /* 2 series existed already */
    shoal_metrics_destroy(&m);
    CHECK(m == NULL);
    shoal_metrics_destroy(&m);

    /* concurrent updates add up */
    m = shoal_metrics_new();
    const char *lab[] = {"k"};
    int id = shoal_metrics_add_family(m, SHOAL_METRIC_COUNTER, "c_total", "C.", lab, 1, NULL, 0);
    pthread_t th[4];
    worker w = {m, id};
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, hammer, &w);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    const char *x[] = {"x"};
    CHECK(shoal_metrics_get(m, id, x) == 40000);
    shoal_metrics_destroy(&m);
    return check_done();
}
