/* A progress bar on standard error (see progress.h). */
#include "swarm/progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "swarm/log.h"

#define PROGRESS_DELAY_S 1.0  /* quicker work draws nothing */
#define PROGRESS_PERIOD_S 0.1 /* at most ten redraws a second */
#define PROGRESS_WIDTH 24     /* characters of bar */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void shoal_progress_init(shoal_progress *p, const char *label, uint64_t total, int unit)
{
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->unit = unit;
    p->enabled = isatty(STDERR_FILENO) && shoal_log_enabled(SHOAL_LOG_INFO);
    p->t0 = now_s();
}

/* "560/1086 MiB" or "12/32" */
static void amount(const shoal_progress *p, char *out, size_t size)
{
    if (p->unit == SHOAL_PROGRESS_BYTES) {
        double d = (double)p->done, t = (double)p->total;
        bool gib = p->total >= (10ull << 30);
        double div = gib ? (double)(1u << 30) : (double)(1u << 20);
        if (p->total)
            snprintf(out, size, "%.*f/%.*f %s", gib ? 1 : 0, d / div, gib ? 1 : 0, t / div,
                     gib ? "GiB" : "MiB");
        else
            snprintf(out, size, "%.*f %s", gib ? 1 : 0, d / div, gib ? "GiB" : "MiB");
    } else if (p->total) {
        snprintf(out, size, "%llu/%llu", (unsigned long long)p->done,
                 (unsigned long long)p->total);
    } else {
        snprintf(out, size, "%llu", (unsigned long long)p->done);
    }
}

static void draw(shoal_progress *p, double t)
{
    char bar[PROGRESS_WIDTH + 1], amt[48], eta[32] = "";
    double frac = p->total ? (double)p->done / (double)p->total : 0;
    if (frac > 1)
        frac = 1;
    int fill = (int)(frac * PROGRESS_WIDTH);
    for (int i = 0; i < PROGRESS_WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[PROGRESS_WIDTH] = 0;
    amount(p, amt, sizeof amt);
    double el = t - p->t0;
    if (p->total && frac > 0 && frac < 1)
        snprintf(eta, sizeof eta, ", %.0f s left", el / frac - el + 0.5);
    if (p->total)
        fprintf(stderr, "\r%s [%s] %3d%%  %s  %.0f s%s\033[K", p->label, bar, (int)(frac * 100),
                amt, el, eta);
    else
        fprintf(stderr, "\r%s  %s  %.0f s\033[K", p->label, amt, el);
    fflush(stderr);
    p->drawn = true;
    p->last = t;
}

void shoal_progress_set(shoal_progress *p, uint64_t done)
{
    p->done = done;
    if (!p->enabled)
        return;
    double t = now_s();
    if (t - p->t0 < PROGRESS_DELAY_S || (p->drawn && t - p->last < PROGRESS_PERIOD_S))
        return;
    draw(p, t);
}

void shoal_progress_cb(void *ctx, uint64_t done, uint64_t total)
{
    shoal_progress *p = ctx;
    p->total = total;
    shoal_progress_set(p, done);
}

void shoal_progress_fini(shoal_progress *p, bool ok)
{
    if (!p->enabled || !p->drawn)
        return;
    if (ok) {
        if (p->total)
            p->done = p->total;
        draw(p, now_s());
        fputc('\n', stderr);
    } else {
        fputs("\r\033[K", stderr);
    }
    fflush(stderr);
    p->drawn = false;
}
