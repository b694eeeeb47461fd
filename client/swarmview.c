/* The swarm as a client sees it (see swarmview.h). */
#include "client/swarmview.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/err.h"
#include "swarm/record.h"

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

int shoal_swarm_view_serves(const shoal_discover_server *s, uint32_t b)
{
    return s->answered && s->rec.state == SHOAL_RECORD_ONLINE &&
           s->cand.state != SHOAL_WIRE_STATE_OFFLINE && s->cand.info.span_start <= b &&
           b < s->cand.info.span_end;
}

static void summarize(shoal_swarm_view *v)
{
    v->complete = 1;
    for (uint32_t b = 0; b < v->nblocks; b++) {
        v->served[b] = 0;
        v->tput[b] = 0;
        for (size_t i = 0; i < v->nsv; i++)
            if (shoal_swarm_view_serves(&v->sv[i], b)) {
                v->served[b]++;
                v->tput[b] += v->sv[i].rec.throughput;
            }
        if (!v->served[b])
            v->complete = 0;
    }
}

int shoal_swarm_view_read(shoal_swarm_view *v, const char *const *initial, size_t n_initial,
                          const shoal_model_id *id, uint32_t nblocks, int timeout_ms,
                          int bandwidth, char *err, size_t errlen)
{
    v->id = *id;
    v->nblocks = nblocks;
    v->complete = 0;
    v->served = calloc(nblocks ? nblocks : 1, sizeof *v->served);
    v->tput = calloc(nblocks ? nblocks : 1, sizeof *v->tput);
    if (!v->served || !v->tput) {
        snprintf(err, errlen, "out of memory");
        return SHOAL_ERR_NOMEM;
    }
    shoal_discover_params dp = shoal_discover_params_default();
    dp.timeout_ms = timeout_ms;
    dp.include_offline = 1;
    if (!bandwidth)
        dp.pad_max = 0;
    int rc = shoal_discover_servers(initial, n_initial, id->hash, nblocks, &dp, &v->sv, &v->nsv,
                                    &v->st, err, errlen);
    if (rc)
        return rc;
    summarize(v);
    return 0;
}

json_t *shoal_swarm_view_json(const shoal_swarm_view *v)
{
    char h[65], pid[65];
    hex(v->id.hash, 32, h);
    json_t *servers = json_array(), *blocks = json_array();
    for (size_t i = 0; servers && i < v->nsv; i++) {
        const shoal_discover_server *s = &v->sv[i];
        hex(s->rec.peer_id, 32, pid);
        const char *state = shoal_record_state_name(s->rec.state);
        json_t *adapters = json_array();
        for (uint32_t k = 0; adapters && k < s->rec.nadapters; k++)
            json_array_append_new(adapters, json_string(s->rec.adapters[k]));
        json_t *o = json_pack("{s:s,s:s,s:[i,i],s:s,s:f,s:I,s:s,s:o,s:b,s:I,s:I}", "address",
                              s->rec.addr, "peer_id", pid, "span", (int)s->rec.span_start,
                              (int)s->rec.span_end, "state", state ? state : "?", "throughput",
                              s->rec.throughput, "free_tokens", (json_int_t)s->rec.free_tokens,
                              "software", s->rec.software, "adapters",
                              adapters ? adapters : json_array(), "answered", s->answered,
                              "seq", (json_int_t)s->rec.seq, "expires_ms",
                              (json_int_t)s->rec.expires_ms);
        if (!o)
            continue;
        if (s->answered) {
            json_object_set_new(o, "rtt_ms", json_real(s->rtt_ms));
            json_object_set_new(o, "live_span",
                                json_pack("[i,i]", (int)s->cand.info.span_start,
                                          (int)s->cand.info.span_end));
            json_object_set_new(o, "live_free_tokens",
                                json_integer((json_int_t)s->cand.info.free_tokens));
            json_object_set_new(o, "bandwidth", json_real(s->bandwidth));
            json_object_set_new(o, "bandwidth_bound", json_boolean(s->bandwidth_bound));
        } else {
            json_object_set_new(o, "error", json_string(s->why));
        }
        json_array_append_new(servers, o);
    }
    for (uint32_t b = 0; blocks && b < v->nblocks; b++) {
        json_t *addrs = json_array();
        for (size_t i = 0; addrs && i < v->nsv; i++)
            if (shoal_swarm_view_serves(&v->sv[i], b))
                json_array_append_new(addrs, json_string(v->sv[i].rec.addr));
        json_array_append_new(blocks, json_pack("{s:i,s:i,s:f,s:o}", "block", (int)b, "servers",
                                                (int)v->served[b], "throughput", v->tput[b],
                                                "addresses", addrs ? addrs : json_array()));
    }
    if (!servers || !blocks) {
        json_decref(servers);
        json_decref(blocks);
        return NULL;
    }
    return json_pack("{s:s?,s:s,s:s,s:i,s:b,s:o,s:o,s:{s:I,s:i,s:i,s:i,s:f,s:f,s:f}}", "file",
                     v->path, "name", v->id.name, "hash", h, "nblocks", (int)v->nblocks,
                     "complete", v->complete, "servers", servers, "blocks", blocks, "dht",
                     "contacts", (json_int_t)v->st.contacts, "records", (int)v->st.records,
                     "rejected", (int)v->st.rejected, "max_hops", (int)v->st.max_hops,
                     "join_ms", v->st.join_ms, "read_ms", v->st.read_ms, "probe_ms",
                     v->st.probe_ms);
}

void shoal_swarm_view_free(shoal_swarm_view *v)
{
    free(v->sv);
    free(v->served);
    free(v->tput);
    v->sv = NULL;
    v->served = NULL;
    v->tput = NULL;
    v->nsv = 0;
}
