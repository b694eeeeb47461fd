/*
 * A progress bar on standard error for work that may take more than a
 * second (loading a model's pages, writing a model file, a benchmark).
 *
 * The bar is drawn only when standard error is a terminal and the log
 * level lets info lines through (-q hides it), and only once the work has
 * lasted a second: quick work prints nothing. It is redrawn at most ten
 * times a second, on one line ("\r"), and shoal_progress_fini() ends it
 * with a newline (or erases it, when the work failed, so that the error
 * message starts a clean line). When standard error is not a terminal
 * nothing is printed at all, so logs and test output stay clean.
 *
 * A shoal_progress lives where the work runs (on the stack); kernels/ take
 * shoal_progress_cb with the object as ctx (kernels never print).
 *
 * THREAD SAFETY: one object is used by one thread at a time; log lines
 * written by other threads while a bar is drawn share its line.
 */
#ifndef SHOAL_SWARM_PROGRESS_H
#define SHOAL_SWARM_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

enum { SHOAL_PROGRESS_ITEMS = 0, SHOAL_PROGRESS_BYTES = 1 };

typedef struct shoal_progress {
    char label[32];     /* what is being done ("loading blocks 0:4") */
    uint64_t total;     /* 0: unknown (no bar, just the count) */
    uint64_t done;
    int unit;           /* SHOAL_PROGRESS_ITEMS or SHOAL_PROGRESS_BYTES */
    bool enabled;       /* standard error is a terminal and info is logged */
    bool drawn;         /* the bar is on the screen */
    double t0;          /* start, monotonic seconds */
    double last;        /* last redraw */
} shoal_progress;

/* Starts a bar for total units of work (label is copied, cut to fit). */
void shoal_progress_init(shoal_progress *p, const char *label, uint64_t total, int unit);

/* done units of total are finished (redraws when due). */
void shoal_progress_set(shoal_progress *p, uint64_t done);

/* As shoal_progress_set, in the kernels' callback shape: ctx is the
 * shoal_progress; total replaces the bar's. */
void shoal_progress_cb(void *ctx, uint64_t done, uint64_t total);

/* Ends the bar: ok draws it full and ends its line, !ok erases it. */
void shoal_progress_fini(shoal_progress *p, bool ok);

#endif
