/*
 * Parsing of completion requests for the API (see api_request.h): the JSON
 * body of POST /v1/chat/completions or /v1/completions -> a job.
 */
#include "client/api_request.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/chat.h"
#include "kernels/err.h"

static int bad(shoal_api_error *e, int status, const char *param, const char *code, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
static int bad(shoal_api_error *e, int status, const char *param, const char *code, const char *fmt,
               ...)
{
    e->status = status;
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return status;
}

/* A number field in [lo, hi], or def when absent or null. */
static int get_number(json_t *o, const char *key, double lo, double hi, double def, double *out,
                      shoal_api_error *e)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return bad(e, 400, key, "invalid_type", "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return bad(e, 400, key, "invalid_value", "'%s' must be between %g and %g", key, lo, hi);
    *out = d;
    return 0;
}

static int get_int(json_t *o, const char *key, long long lo, long long hi, long long def,
                   long long *out, shoal_api_error *e)
{
    json_t *v = json_object_get(o, key);
    *out = def;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return bad(e, 400, key, "invalid_type", "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return bad(e, 400, key, "invalid_value", "'%s' must be between %lld and %lld", key, lo,
                   hi);
    *out = x;
    return 0;
}

static int get_bool(json_t *o, const char *key, bool *out, shoal_api_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bad(e, 400, key, "invalid_type", "'%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int add_stop(shoal_api_job *r, json_t *s, shoal_api_error *e)
{
    if (!json_is_string(s))
        return bad(e, 400, "stop", "invalid_type",
                   "'stop' must be a string or an array of strings");
    size_t l = json_string_length(s);
    if (l == 0)
        return 0;
    if (l > SHOAL_API_MAX_STOP_LEN)
        return bad(e, 400, "stop", "invalid_value", "a stop sequence is over %d bytes",
                   SHOAL_API_MAX_STOP_LEN);
    if (r->n_stops == SHOAL_API_MAX_STOPS)
        return bad(e, 400, "stop", "invalid_value", "at most %d stop sequences",
                   SHOAL_API_MAX_STOPS);
    if (!(r->stops[r->n_stops] = malloc(l)))
        return bad(e, 500, NULL, NULL, "out of memory");
    memcpy(r->stops[r->n_stops], json_string_value(s), l);
    r->stop_len[r->n_stops++] = l;
    return 0;
}

/* The text of a message's content: a string, null, or an array of parts
 * of which the {"type": "text", "text": ...} ones are joined. Returns a
 * malloc'ed string or NULL with e set. */
static char *message_text(json_t *content, int idx, shoal_api_error *e)
{
    if (!content || json_is_null(content))
        return strdup("");
    if (json_is_string(content))
        return strndup(json_string_value(content), json_string_length(content));
    if (!json_is_array(content)) {
        bad(e, 400, "messages", "invalid_type",
            "messages[%d].content must be a string or an array of parts", idx);
        return NULL;
    }
    size_t total = 0, i;
    json_t *part;
    json_array_foreach(content, i, part) {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") ||
            !json_is_string(text)) {
            bad(e, 400, "messages", "invalid_value",
                "messages[%d].content[%zu]: only text parts are supported", idx, i);
            return NULL;
        }
        total += json_string_length(text);
    }
    char *s = malloc(total + 1), *p = s;
    if (!s) {
        bad(e, 500, NULL, NULL, "out of memory");
        return NULL;
    }
    json_array_foreach(content, i, part) {
        json_t *text = json_object_get(part, "text");
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    *p = 0;
    return s;
}

/* messages -> prompt tokens through the model's template. */
static int parse_messages(const shoal_api_parse_ctx *a, shoal_api_job *r, json_t *msgs,
                          shoal_api_error *e)
{
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return bad(e, 400, "messages", json_is_array(msgs) ? "invalid_value" : "invalid_type",
                   "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    if (n > SHOAL_API_MAX_MESSAGES)
        return bad(e, 400, "messages", "invalid_value", "more than %d messages",
                   SHOAL_API_MAX_MESSAGES);
    shoal_chat_msg *m = calloc(n, sizeof *m);
    char **texts = calloc(n, sizeof *texts);
    int status = 0;
    if (!m || !texts) {
        status = bad(e, 500, NULL, NULL, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(msgs, i), *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            status = bad(e, 400, "messages", "invalid_type",
                         "messages[%zu] must be an object with a 'role'", i);
            goto out;
        }
        const char *rn = json_string_value(role);
        int ro = !strcmp(rn, "developer") ? SHOAL_ROLE_SYSTEM : shoal_chat_role_from_name(rn);
        if (ro < 0) {
            status = bad(e, 400, "messages", "invalid_value",
                         "messages[%zu].role: '%.64s' is not system, user or assistant", i, rn);
            goto out;
        }
        if (!(texts[i] = message_text(json_object_get(msg, "content"), (int)i, e))) {
            status = e->status ? e->status : bad(e, 500, NULL, NULL, "out of memory");
            goto out;
        }
        m[i] = (shoal_chat_msg){ro, texts[i]};
    }
    int tmpl = shoal_lm_chat_template(a->lm), ctx = shoal_lm_ctx(a->lm), got = 0;
    if (!(r->prompt = malloc((size_t)ctx * sizeof *r->prompt))) {
        status = bad(e, 500, NULL, NULL, "out of memory");
        goto out;
    }
    int rc = shoal_chat_render(tmpl, shoal_lm_tokenizer(a->lm), m, (int)n, true, r->prompt, ctx,
                               &got);
    if (rc == SHOAL_ERR_RANGE || (!rc && got >= ctx)) {
        status = bad(e, 400, "messages", "context_length_exceeded",
                     "the messages are %d tokens; the context is %d", got, ctx);
        goto out;
    }
    if (rc == SHOAL_ERR_ARG) {
        status = bad(e, 400, "messages", "invalid_value",
                     "the roles of these messages do not fit the model's chat template (%s)",
                     shoal_chat_template_name(tmpl));
        goto out;
    }
    if (rc) {
        status = bad(e, 500, NULL, NULL, "cannot render the messages: %s", shoal_strerror(rc));
        goto out;
    }
    r->n_prompt = got;
    r->end_tok = shoal_chat_end_token(tmpl, shoal_lm_tokenizer(a->lm));
out:
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(m);
    return status;
}

/* prompt: a string, an array of one string, or an array of token ids. */
static int parse_prompt(const shoal_api_parse_ctx *a, shoal_api_job *r, json_t *prompt,
                        shoal_api_error *e)
{
    const shoal_tokenizer *tok = shoal_lm_tokenizer(a->lm);
    int ctx = shoal_lm_ctx(a->lm), n_vocab = shoal_tokenizer_n_vocab(tok);
    if (json_is_array(prompt) && json_array_size(prompt) == 1 &&
        json_is_string(json_array_get(prompt, 0)))
        prompt = json_array_get(prompt, 0);
    if (!(r->prompt = malloc((size_t)ctx * sizeof *r->prompt)))
        return bad(e, 500, NULL, NULL, "out of memory");
    if (json_is_string(prompt)) {
        int got = 0;
        int rc = shoal_tokenizer_encode(tok, json_string_value(prompt), json_string_length(prompt),
                                        shoal_tokenizer_add_bos(tok), r->prompt, ctx, &got);
        if (rc == SHOAL_ERR_RANGE || (!rc && got >= ctx))
            return bad(e, 400, "prompt", "context_length_exceeded",
                       "the prompt is %d tokens; the context is %d", got, ctx);
        if (rc)
            return bad(e, 500, NULL, NULL, "cannot tokenize the prompt: %s", shoal_strerror(rc));
        r->n_prompt = got;
    } else if (json_is_array(prompt) && json_array_size(prompt) > 0) {
        size_t n = json_array_size(prompt), i;
        if (n >= (size_t)ctx)
            return bad(e, 400, "prompt", "context_length_exceeded",
                       "the prompt is %zu tokens; the context is %d", n, ctx);
        json_t *t;
        json_array_foreach(prompt, i, t) {
            if (!json_is_integer(t) || json_integer_value(t) < 0 ||
                json_integer_value(t) >= n_vocab)
                return bad(e, 400, "prompt", "invalid_value",
                           "'prompt' must be a string, an array of one string, or an array of "
                           "token ids below %d",
                           n_vocab);
            r->prompt[i] = (int32_t)json_integer_value(t);
        }
        r->n_prompt = (int)n;
    } else {
        return bad(e, 400, "prompt", "invalid_type",
                   "'prompt' must be a string, an array of one string, or an array of token "
                   "ids");
    }
    if (r->n_prompt == 0)
        return bad(e, 400, "prompt", "invalid_value",
                   "the prompt is empty and the model has no BOS token");
    r->end_tok = -1;
    return 0;
}

int shoal_api_parse(const shoal_api_parse_ctx *a, const char *body, size_t len, bool chat,
                    shoal_api_job *r, shoal_api_error *e)
{
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->chat = chat;
    json_error_t je;
    json_t *o = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
    int status = 0;
    if (!o)
        return bad(e, 400, NULL, "invalid_json", "the body is not valid JSON: %s (at %d:%d)",
                   je.text, je.line, je.column);
    if (!json_is_object(o)) {
        status = bad(e, 400, NULL, "invalid_json", "the body must be a JSON object");
        goto out;
    }
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) {
            status = bad(e, 400, "model", "invalid_type", "'model' must be a string");
            goto out;
        }
        if (strcmp(json_string_value(model), a->model_name)) {
            status = bad(e, 404, "model", "model_not_found",
                         "The model '%.200s' does not exist (this server has '%s')",
                         json_string_value(model), a->model_name);
            goto out;
        }
    }
    long long n = 1, max_tokens, seed;
    double temp, top_p;
    bool logprobs = false, echo = false;
    if ((status = get_int(o, "n", 1, 1, 1, &n, e)))
        goto out;
    if ((status = get_bool(o, "stream", &r->stream, e)) ||
        (status = get_bool(o, "logprobs", &logprobs, e)) ||
        (status = get_bool(o, "echo", &echo, e)))
        goto out;
    if (logprobs) {
        status = bad(e, 400, "logprobs", "unsupported_value", "logprobs are not supported");
        goto out;
    }
    if (echo) {
        status = bad(e, 400, "echo", "unsupported_value", "echo is not supported");
        goto out;
    }
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so)) {
            status = bad(e, 400, "stream_options", "invalid_type",
                         "'stream_options' must be an object");
            goto out;
        }
        if ((status = get_bool(so, "include_usage", &r->include_usage, e)))
            goto out;
    }
    int ctx = shoal_lm_ctx(a->lm);
    long long def_max = r->chat ? ctx : SHOAL_API_COMPLETIONS_DEFAULT_MAX;
    if ((status = get_int(o, "max_tokens", 1, 1LL << 31, def_max, &max_tokens, e)))
        goto out;
    if (r->chat && !json_object_get(o, "max_tokens") &&
        (status = get_int(o, "max_completion_tokens", 1, 1LL << 31, def_max, &max_tokens, e)))
        goto out;
    if ((status = get_number(o, "temperature", 0, 2, 1.0, &temp, e)) ||
        (status = get_number(o, "top_p", 0, 1, 1.0, &top_p, e)))
        goto out;
    if ((status = get_int(o, "seed", INT64_MIN, INT64_MAX, 0, &seed, e)))
        goto out;
    json_t *stop = json_object_get(o, "stop");
    if (stop && !json_is_null(stop)) {
        if (json_is_array(stop)) {
            size_t i;
            json_t *s;
            json_array_foreach(stop, i, s) if ((status = add_stop(r, s, e))) goto out;
        } else if ((status = add_stop(r, stop, e))) {
            goto out;
        }
    }
    if (r->chat) {
        json_t *msgs = json_object_get(o, "messages");
        if (!msgs) {
            status = bad(e, 400, "messages", "missing_required_parameter",
                         "'messages' is required");
            goto out;
        }
        if ((status = parse_messages(a, r, msgs, e)))
            goto out;
    } else {
        json_t *prompt = json_object_get(o, "prompt");
        if (!prompt) {
            status = bad(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
            goto out;
        }
        if ((status = parse_prompt(a, r, prompt, e)))
            goto out;
    }
    long long room = ctx - r->n_prompt;
    r->max_tokens = (int)(max_tokens < room ? max_tokens : room);
    r->sp = shoal_sampler_params_default();
    r->sp.temp = (float)temp;
    r->sp.top_p = (float)top_p;
    r->sp.top_k = 0;
    r->sp.min_p = 0;
    r->sp.repeat_penalty = 1;
    r->sp.seed = json_object_get(o, "seed") && !json_is_null(json_object_get(o, "seed"))
                     ? (uint64_t)seed
                     : a->seed;
out:
    json_decref(o);
    return status;
}


void shoal_api_job_free(shoal_api_job *r)
{
    for (int i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->prompt);
    r->n_stops = 0;
    r->prompt = NULL;
}
