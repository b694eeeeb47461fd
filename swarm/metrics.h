/*
 * Metrics in the Prometheus text format (version 0.0.4), for any process
 * that serves /metrics: the API today, nodes when they grow an HTTP port.
 *
 * A registry holds families (a name, a help line, a type and up to
 * SHOAL_METRICS_MAX_LABELS label names); a family holds series, one per
 * distinct tuple of label values, created on first use. Counters only go
 * up, gauges are set or moved, histograms count observations into fixed
 * cumulative buckets and keep their sum. Names follow Prometheus' rules
 * ([a-zA-Z_:][a-zA-Z0-9_:]*), are checked when a family is added, and
 * should carry base units (_seconds, _bytes) and _total for counters.
 *
 * Label values may come from outside (a route, a model name): they are
 * escaped when rendered, and a family holds at most
 * SHOAL_METRICS_MAX_SERIES series so that no input can grow it without
 * bound; an update that would need one more series goes to no series and
 * is counted in shoal_metrics_dropped().
 *
 * Ownership: the registry copies names, help texts, bounds and label
 * values; shoal_metrics_render returns a malloc'ed text the caller frees.
 * THREAD SAFETY: every function may be called from any thread at once
 * (one mutex per registry); families must all be added before the
 * registry is shared.
 */
#ifndef SHOAL_SWARM_METRICS_H
#define SHOAL_SWARM_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SHOAL_METRICS_MAX_LABELS 4
#define SHOAL_METRICS_MAX_SERIES 256
#define SHOAL_METRICS_MAX_BUCKETS 32
#define SHOAL_METRICS_MAX_FAMILIES 128

typedef struct shoal_metrics shoal_metrics;

typedef enum shoal_metric_type {
    SHOAL_METRIC_COUNTER = 0,
    SHOAL_METRIC_GAUGE = 1,
    SHOAL_METRIC_HISTOGRAM = 2,
} shoal_metric_type;

/* Bounds (seconds) for request latencies: 5 ms .. 2 min. */
extern const double shoal_metrics_latency_bounds[];
extern const int shoal_metrics_latency_n_bounds;

shoal_metrics *shoal_metrics_new(void);
void shoal_metrics_destroy(shoal_metrics **m);

/* Adds a family; returns its id (>= 0) or -1 for a bad name, label name,
 * type or bounds (histograms: 1..SHOAL_METRICS_MAX_BUCKETS strictly
 * increasing finite bounds, +Inf is implied), a name already used by a
 * different family, a full registry or no memory. Adding a family again
 * with the same name, type, labels and bounds returns the id it has (its
 * series and values stay): a component made anew registers again. label_names[0..n_labels) may be NULL when
 * n_labels is 0. */
int shoal_metrics_add_family(shoal_metrics *m, int type, const char *name, const char *help,
                             const char *const *label_names, int n_labels,
                             const double *bounds, int n_bounds);

/* Updates the series of family id with the given label values (as many as
 * the family has label names; NULL when none). Counters take v >= 0 in
 * _inc; _set works on gauges (and counters, for values kept elsewhere);
 * _observe on histograms. Calls on the wrong type or id are ignored. */
void shoal_metrics_inc(shoal_metrics *m, int id, const char *const *values, double v);
void shoal_metrics_set(shoal_metrics *m, int id, const char *const *values, double v);
void shoal_metrics_observe(shoal_metrics *m, int id, const char *const *values, double v);

/* The value of a counter or gauge series (0 when it does not exist), or
 * the observation count of a histogram series. For tests. */
double shoal_metrics_get(shoal_metrics *m, int id, const char *const *values);

/* Updates dropped because a family had no room for another series. */
uint64_t shoal_metrics_dropped(shoal_metrics *m);

/* The whole registry as Prometheus text into a new buffer (*out, *len,
 * NUL-terminated). Returns 0 or SHOAL_ERR_NOMEM. */
int shoal_metrics_render(shoal_metrics *m, char **out, size_t *len);

#endif
