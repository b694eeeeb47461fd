/*
 * Prometheus text metrics (see metrics.h).
 *
 * A family is an array of series found by a linear scan of their label
 * values: families hold a handful of series (routes, status codes), so a
 * scan under the registry's mutex costs less than any hashing would. The
 * text is rendered into a growable buffer, families in the order they were
 * added, series in the order they appeared, histogram buckets cumulative
 * as the format wants them.
 */
#include "swarm/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"

const double shoal_metrics_latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                               1,     2.5,  5,     10,   30,  60,  120};
const int shoal_metrics_latency_n_bounds =
    (int)(sizeof shoal_metrics_latency_bounds / sizeof shoal_metrics_latency_bounds[0]);

typedef struct series {
    char *values[SHOAL_METRICS_MAX_LABELS];
    double value;                                  /* counter, gauge */
    uint64_t buckets[SHOAL_METRICS_MAX_BUCKETS];   /* histogram: per bound, not cumulative */
    uint64_t count;                                /* histogram */
    double sum;                                    /* histogram */
} series;

typedef struct family {
    int type;
    char *name, *help;
    char *labels[SHOAL_METRICS_MAX_LABELS];
    int n_labels;
    double bounds[SHOAL_METRICS_MAX_BUCKETS];
    int n_bounds;
    series *s;
    int n, cap;
} family;

struct shoal_metrics {
    pthread_mutex_t mu;
    family fam[SHOAL_METRICS_MAX_FAMILIES];
    int n_fam;
    uint64_t dropped;
};

shoal_metrics *shoal_metrics_new(void)
{
    shoal_metrics *m = calloc(1, sizeof *m);
    if (m && pthread_mutex_init(&m->mu, NULL)) {
        free(m);
        return NULL;
    }
    return m;
}

static void family_free(family *f)
{
    for (int i = 0; i < f->n; i++)
        for (int j = 0; j < f->n_labels; j++)
            free(f->s[i].values[j]);
    free(f->s);
    for (int j = 0; j < f->n_labels; j++)
        free(f->labels[j]);
    free(f->name);
    free(f->help);
    memset(f, 0, sizeof *f);
}

void shoal_metrics_destroy(shoal_metrics **p)
{
    shoal_metrics *m = p ? *p : NULL;
    if (!m)
        return;
    for (int i = 0; i < m->n_fam; i++)
        family_free(&m->fam[i]);
    pthread_mutex_destroy(&m->mu);
    free(m);
    *p = NULL;
}

static bool valid_name(const char *s, bool colon)
{
    if (!s || !*s)
        return false;
    for (const char *c = s; *c; c++) {
        bool alpha = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                     (colon && *c == ':');
        bool digit = *c >= '0' && *c <= '9';
        if (!alpha && !(digit && c != s))
            return false;
    }
    return true;
}

static bool same_family(const family *f, int type, const char *const *label_names,
                        int n_labels, const double *bounds, int n_bounds)
{
    if (f->type != type || f->n_labels != n_labels || f->n_bounds != n_bounds)
        return false;
    for (int j = 0; j < n_labels; j++)
        if (strcmp(f->labels[j], label_names[j]))
            return false;
    for (int j = 0; j < n_bounds; j++)
        if (f->bounds[j] != bounds[j])
            return false;
    return true;
}

int shoal_metrics_add_family(shoal_metrics *m, int type, const char *name, const char *help,
                             const char *const *label_names, int n_labels,
                             const double *bounds, int n_bounds)
{
    if (!m || !valid_name(name, true) || n_labels < 0 || n_labels > SHOAL_METRICS_MAX_LABELS ||
        (n_labels && !label_names) || type < SHOAL_METRIC_COUNTER ||
        type > SHOAL_METRIC_HISTOGRAM)
        return -1;
    if (type == SHOAL_METRIC_HISTOGRAM) {
        if (!bounds || n_bounds < 1 || n_bounds > SHOAL_METRICS_MAX_BUCKETS)
            return -1;
        for (int i = 0; i < n_bounds; i++)
            if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
                return -1;
    } else if (n_bounds) {
        return -1;
    }
    for (int j = 0; j < n_labels; j++)
        if (!valid_name(label_names[j], false) || !strcmp(label_names[j], "le") ||
            !strncmp(label_names[j], "__", 2))
            return -1;
    pthread_mutex_lock(&m->mu);
    int id = -1;
    if (m->n_fam == SHOAL_METRICS_MAX_FAMILIES)
        goto out;
    for (int i = 0; i < m->n_fam; i++) {
        if (strcmp(m->fam[i].name, name))
            continue;
        if (same_family(&m->fam[i], type, label_names, n_labels, bounds, n_bounds))
            id = i; /* added again (a node made anew after moving): the same family */
        goto out;
    }
    family *f = &m->fam[m->n_fam];
    memset(f, 0, sizeof *f);
    f->type = type;
    f->name = strdup(name);
    f->help = strdup(help ? help : "");
    bool ok = f->name && f->help;
    for (int j = 0; j < n_labels; j++, f->n_labels++)
        ok = ok && (f->labels[j] = strdup(label_names[j]));
    if (!ok) {
        family_free(f);
        goto out;
    }
    if (type == SHOAL_METRIC_HISTOGRAM)
        memcpy(f->bounds, bounds, (size_t)n_bounds * sizeof *bounds);
    f->n_bounds = type == SHOAL_METRIC_HISTOGRAM ? n_bounds : 0;
    id = m->n_fam++;
out:
    pthread_mutex_unlock(&m->mu);
    return id;
}

/* The series of f with these values, created when create; NULL when there
 * is none (or no room). Under the mutex. */
static series *find_series(shoal_metrics *m, family *f, const char *const *values, bool create)
{
    for (int i = 0; i < f->n; i++) {
        int j = 0;
        while (j < f->n_labels && !strcmp(f->s[i].values[j], values[j] ? values[j] : ""))
            j++;
        if (j == f->n_labels)
            return &f->s[i];
    }
    if (!create)
        return NULL;
    if (f->n == SHOAL_METRICS_MAX_SERIES) {
        m->dropped++;
        return NULL;
    }
    if (f->n == f->cap) {
        int cap = f->cap ? 2 * f->cap : 4;
        series *s = realloc(f->s, (size_t)cap * sizeof *s);
        if (!s) {
            m->dropped++;
            return NULL;
        }
        f->s = s;
        f->cap = cap;
    }
    series *s = &f->s[f->n];
    memset(s, 0, sizeof *s);
    for (int j = 0; j < f->n_labels; j++) {
        if (!(s->values[j] = strdup(values[j] ? values[j] : ""))) {
            for (int k = 0; k < j; k++)
                free(s->values[k]);
            m->dropped++;
            return NULL;
        }
    }
    f->n++;
    return s;
}

static family *family_of(shoal_metrics *m, int id, const char *const *values)
{
    if (!m || id < 0 || id >= m->n_fam)
        return NULL;
    family *f = &m->fam[id];
    if (f->n_labels && !values)
        return NULL;
    return f;
}

void shoal_metrics_inc(shoal_metrics *m, int id, const char *const *values, double v)
{
    family *f = family_of(m, id, values);
    if (!f || f->type == SHOAL_METRIC_HISTOGRAM || isnan(v) ||
        (f->type == SHOAL_METRIC_COUNTER && v < 0))
        return;
    pthread_mutex_lock(&m->mu);
    series *s = find_series(m, f, values, true);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&m->mu);
}

void shoal_metrics_set(shoal_metrics *m, int id, const char *const *values, double v)
{
    family *f = family_of(m, id, values);
    if (!f || f->type == SHOAL_METRIC_HISTOGRAM)
        return;
    pthread_mutex_lock(&m->mu);
    series *s = find_series(m, f, values, true);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&m->mu);
}

void shoal_metrics_observe(shoal_metrics *m, int id, const char *const *values, double v)
{
    family *f = family_of(m, id, values);
    if (!f || f->type != SHOAL_METRIC_HISTOGRAM || isnan(v))
        return;
    pthread_mutex_lock(&m->mu);
    series *s = find_series(m, f, values, true);
    if (s) {
        int b = 0;
        while (b < f->n_bounds && v > f->bounds[b])
            b++;
        if (b < f->n_bounds)
            s->buckets[b]++;
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&m->mu);
}

double shoal_metrics_get(shoal_metrics *m, int id, const char *const *values)
{
    family *f = family_of(m, id, values);
    if (!f)
        return 0;
    pthread_mutex_lock(&m->mu);
    series *s = find_series(m, f, values, false);
    double v = !s ? 0 : f->type == SHOAL_METRIC_HISTOGRAM ? (double)s->count : s->value;
    pthread_mutex_unlock(&m->mu);
    return v;
}

uint64_t shoal_metrics_dropped(shoal_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    uint64_t d = m->dropped;
    pthread_mutex_unlock(&m->mu);
    return d;
}

/* ---- rendering ------------------------------------------------------------- */

typedef struct text {
    char *p;
    size_t n, cap;
    bool oom;
} text;

static void put(text *t, const char *s, size_t n)
{
    if (t->oom)
        return;
    if (n >= t->cap - t->n) {
        size_t cap = t->cap ? t->cap : 4096;
        while (n >= cap - t->n)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->oom = true;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
    t->p[t->n] = 0;
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void putf(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(text *t, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(t, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* The shortest of %.15g and %.17g that reads back as v. */
static void fmt_double(char *buf, size_t cap, double v)
{
    if (isnan(v))
        snprintf(buf, cap, "NaN");
    else if (isinf(v))
        snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else if (snprintf(buf, cap, "%.15g", v), strtod(buf, NULL) != v)
        snprintf(buf, cap, "%.17g", v);
}

static void put_number(text *t, double v)
{
    char buf[64];
    fmt_double(buf, sizeof buf, v);
    puts_(t, buf);
}

/* HELP text escapes \ and newline; label values also ". */
static void put_escaped(text *t, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_(t, "\\\\");
        else if (*s == '\n')
            puts_(t, "\\n");
        else if (quote && *s == '"')
            puts_(t, "\\\"");
        else
            put(t, s, 1);
    }
}

/* {a="x",b="y"[,le="..."]}; nothing when there are no labels at all. */
static void put_labels(text *t, const family *f, const series *s, const char *le)
{
    if (!f->n_labels && !le)
        return;
    puts_(t, "{");
    for (int j = 0; j < f->n_labels; j++) {
        putf(t, "%s%s=\"", j ? "," : "", f->labels[j]);
        put_escaped(t, s->values[j], true);
        puts_(t, "\"");
    }
    if (le)
        putf(t, "%sle=\"%s\"", f->n_labels ? "," : "", le);
    puts_(t, "}");
}

int shoal_metrics_render(shoal_metrics *m, char **out, size_t *len)
{
    static const char *const type_name[] = {"counter", "gauge", "histogram"};
    text t = {0};
    puts_(&t, "");
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n_fam; i++) {
        const family *f = &m->fam[i];
        putf(&t, "# HELP %s ", f->name);
        put_escaped(&t, f->help, false);
        putf(&t, "\n# TYPE %s %s\n", f->name, type_name[f->type]);
        for (int k = 0; k < f->n; k++) {
            const series *s = &f->s[k];
            if (f->type != SHOAL_METRIC_HISTOGRAM) {
                puts_(&t, f->name);
                put_labels(&t, f, s, NULL);
                puts_(&t, " ");
                put_number(&t, s->value);
                puts_(&t, "\n");
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (int b = 0; b <= f->n_bounds; b++) {
                if (b < f->n_bounds) {
                    cum += s->buckets[b];
                    fmt_double(le, sizeof le, f->bounds[b]);
                } else {
                    cum = s->count;
                    snprintf(le, sizeof le, "+Inf");
                }
                putf(&t, "%s_bucket", f->name);
                put_labels(&t, f, s, le);
                putf(&t, " %llu\n", (unsigned long long)cum);
            }
            putf(&t, "%s_sum", f->name);
            put_labels(&t, f, s, NULL);
            puts_(&t, " ");
            put_number(&t, s->sum);
            putf(&t, "\n%s_count", f->name);
            put_labels(&t, f, s, NULL);
            putf(&t, " %llu\n", (unsigned long long)s->count);
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (t.oom) {
        free(t.p);
        *out = NULL;
        *len = 0;
        return SHOAL_ERR_NOMEM;
    }
    *out = t.p;
    *len = t.n;
    return 0;
}
