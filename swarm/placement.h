/*
 * Block placement: which span a server should serve, from what the other
 * servers serve (their records, swarm/blockmap.h) and how fast they are.
 *
 * A block's throughput is the sum of the throughputs (tokens/s through one
 * block, as records say) of the servers that hold it, JOINING or ONLINE;
 * the swarm's throughput is its bottleneck, the least of them: a chain is
 * as fast as its weakest block, and a block nobody serves makes it 0.
 *
 * Choosing (Petals' rule): a new server takes the window of `len` blocks
 * whose blocks are weakest: windows are compared by their throughputs in
 * increasing order, lexicographically (so the window with the weakest
 * block wins, then the one whose next weakest is weakest, ...), then by
 * their total, then by the lower start. An uncovered block always draws
 * the next server, and ties spread servers over the model.
 *
 * Moving: a server re-checks now and then. Without itself the blocks have
 * some throughputs; it would take the window Petals' rule picks over
 * those. It moves only when that raises the swarm's bottleneck (with it
 * where it would be, against with it where it is) by more than `margin`
 * times its own throughput (0.02 in `shoal serve`: 2 % of the most one
 * server can add;
 * a margin relative to the bottleneck would freeze large swarms, where one
 * server is a small share of every block), and when no block is left
 * uncovered after the move. Every move raises the bottleneck by a positive
 * amount, so rebalancing rounds end. A server whose span already is the best never moves, so two
 * servers do not chase each other without a gain each time.
 *
 * THREAD SAFETY: pure functions.
 */
#ifndef SHOAL_SWARM_PLACEMENT_H
#define SHOAL_SWARM_PLACEMENT_H

#include <stddef.h>
#include <stdint.h>

/* One server as placement sees it: blocks [start, end) at `throughput`
 * tokens/s per block. */
typedef struct shoal_placement_span {
    uint32_t start, end;
    double throughput;
} shoal_placement_span;

/* tput[b] for b < nblocks: the sum of the throughputs of the spans that
 * hold b (spans beyond nblocks are cut; negative or NaN throughputs count
 * as 0). */
void shoal_placement_block_tput(const shoal_placement_span *s, size_t n, uint32_t nblocks,
                                double *tput);

/* The least of tput[0..nblocks) (0 for no blocks). */
double shoal_placement_bottleneck(const double *tput, uint32_t nblocks);

/* Petals' rule: the start of the window of len blocks (1 <= len <= nblocks)
 * to serve, given the blocks' throughputs. */
uint32_t shoal_placement_choose(const double *tput, uint32_t nblocks, uint32_t len);

/* Should a server at [cur_start, cur_start + len) with throughput `mine`
 * move, given `others` (the blocks' throughputs without it)? Returns 1 and
 * the new start, or 0. scratch: room for 2 * nblocks doubles. */
int shoal_placement_should_move(const double *others, uint32_t nblocks, uint32_t cur_start,
                                uint32_t len, double mine, double margin, double *scratch,
                                uint32_t *new_start);

/* How many blocks a server of throughput `mine` should take by speed
 * (`shoal serve --num-blocks auto`): as many as it runs in the time the
 * swarm's median server takes for its own span, so that no hop of a chain
 * is much slower than the others: round(median(len_i / t_i) * mine),
 * clamped to [1, max_len]. Spans with no positive throughput do not count;
 * with none left (an empty swarm) it is max_len, what memory holds. So a
 * server twice as fast as the median takes twice the median span. */
uint32_t shoal_placement_length(const shoal_placement_span *s, size_t n, double mine,
                                uint32_t max_len);

#endif
