/*
 * Chat template rendering (see chat.h). Each family is a small table of
 * the text and marker tokens around each role; rendering appends marker
 * ids and tokenized text to a bounded output, counting what would not fit.
 */
#include "client/chat.h"

#include <string.h>

#include "kernels/err.h"

static const char *const template_names[SHOAL_CHAT__COUNT] = {
    "none", "llama2", "llama3", "chatml", "mistral", "gemma", "phi3",
};

const char *shoal_chat_template_name(int tmpl)
{
    return tmpl >= 0 && tmpl < SHOAL_CHAT__COUNT ? template_names[tmpl] : "unknown";
}

int shoal_chat_template_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < SHOAL_CHAT__COUNT; i++)
        if (!strcmp(name, template_names[i]))
            return i;
    if (!strcmp(name, "qwen") || !strcmp(name, "qwen2"))
        return SHOAL_CHAT_CHATML;
    if (!strcmp(name, "phi") || !strcmp(name, "phi-3"))
        return SHOAL_CHAT_PHI3;
    return -1;
}

int shoal_chat_template_detect(const char *j)
{
    if (!j)
        return SHOAL_CHAT_NONE;
    if (strstr(j, "<|im_start|>"))
        return SHOAL_CHAT_CHATML;
    if (strstr(j, "<|start_header_id|>"))
        return SHOAL_CHAT_LLAMA3;
    if (strstr(j, "<start_of_turn>"))
        return SHOAL_CHAT_GEMMA;
    if (strstr(j, "<|assistant|>") && strstr(j, "<|end|>"))
        return SHOAL_CHAT_PHI3;
    if (strstr(j, "[INST]") && strstr(j, "<<SYS>>"))
        return SHOAL_CHAT_LLAMA2;
    if (strstr(j, "[INST]"))
        return SHOAL_CHAT_MISTRAL;
    return SHOAL_CHAT_NONE;
}

int shoal_chat_role_from_name(const char *name)
{
    if (!name)
        return -1;
    if (!strcmp(name, "system"))
        return SHOAL_ROLE_SYSTEM;
    if (!strcmp(name, "user"))
        return SHOAL_ROLE_USER;
    if (!strcmp(name, "assistant"))
        return SHOAL_ROLE_ASSISTANT;
    return -1;
}

typedef struct out_buf {
    const shoal_tokenizer *tok;
    int32_t *out;
    int max, n;
    int err;
} out_buf;

static void put_id(out_buf *o, int32_t id)
{
    if (id < 0) {
        o->err = o->err ? o->err : SHOAL_ERR_UNSUPPORTED;
        return;
    }
    if (o->n < o->max)
        o->out[o->n] = id;
    o->n++;
}

static void put_special(out_buf *o, const char *marker)
{
    put_id(o, shoal_tokenizer_find(o->tok, marker, strlen(marker)));
}

static void put_text(out_buf *o, const char *text)
{
    if (!*text)
        return;
    int room = o->n < o->max ? o->max - o->n : 0, got = 0;
    int32_t none;
    int rc = shoal_tokenizer_encode(o->tok, text, strlen(text), false,
                                    room ? o->out + o->n : &none, room, &got);
    if (rc && rc != SHOAL_ERR_RANGE) {
        o->err = o->err ? o->err : rc;
        return;
    }
    o->n += got;
}

static void put_bos(out_buf *o)
{
    put_id(o, shoal_tokenizer_bos(o->tok));
}

/* System text for templates without a system role: prepended to the
 * first user message. */
static const char *system_text(const shoal_chat_msg *msgs, int n, int *first)
{
    *first = 0;
    if (n > 0 && msgs[0].role == SHOAL_ROLE_SYSTEM) {
        *first = 1;
        return msgs[0].content;
    }
    return NULL;
}

static int render_llama2_like(out_buf *o, const shoal_chat_msg *m, int n, bool mistral)
{
    int first;
    const char *sys = system_text(m, n, &first);
    bool sys_pending = sys && *sys;
    for (int i = first; i < n; i++) {
        if (m[i].role == SHOAL_ROLE_USER) {
            if (i == first || !mistral)
                put_bos(o);
            put_text(o, "[INST] ");
            if (sys_pending) {
                if (mistral) {
                    put_text(o, sys);
                    put_text(o, "\n\n");
                } else {
                    put_text(o, "<<SYS>>\n");
                    put_text(o, sys);
                    put_text(o, "\n<</SYS>>\n\n");
                }
                sys_pending = false;
            }
            put_text(o, m[i].content);
            put_text(o, " [/INST]");
        } else if (m[i].role == SHOAL_ROLE_ASSISTANT) {
            put_text(o, " ");
            put_text(o, m[i].content);
            put_id(o, shoal_tokenizer_eos(o->tok));
        } else {
            return SHOAL_ERR_ARG;
        }
    }
    return 0;
}

static int render_tagged(out_buf *o, int tmpl, const shoal_chat_msg *m, int n, bool gen)
{
    static const char *const chatml_roles[] = {"system", "user", "assistant"};
    static const char *const phi_roles[] = {"<|system|>", "<|user|>", "<|assistant|>"};
    int first = 0;
    const char *sys = NULL;
    if (tmpl == SHOAL_CHAT_GEMMA) {
        sys = system_text(m, n, &first); /* Gemma has no system role */
        put_bos(o);
    } else if (tmpl == SHOAL_CHAT_LLAMA3) {
        put_bos(o);
    }
    for (int i = first; i < n; i++) {
        int r = m[i].role;
        if (r < SHOAL_ROLE_SYSTEM || r > SHOAL_ROLE_ASSISTANT)
            return SHOAL_ERR_ARG;
        switch (tmpl) {
        case SHOAL_CHAT_CHATML:
            put_special(o, "<|im_start|>");
            put_text(o, chatml_roles[r]);
            put_text(o, "\n");
            put_text(o, m[i].content);
            put_special(o, "<|im_end|>");
            put_text(o, "\n");
            break;
        case SHOAL_CHAT_LLAMA3:
            put_special(o, "<|start_header_id|>");
            put_text(o, chatml_roles[r]);
            put_special(o, "<|end_header_id|>");
            put_text(o, "\n\n");
            put_text(o, m[i].content);
            put_special(o, "<|eot_id|>");
            break;
        case SHOAL_CHAT_GEMMA:
            put_special(o, "<start_of_turn>");
            put_text(o, r == SHOAL_ROLE_ASSISTANT ? "model\n" : "user\n");
            if (sys && *sys && r == SHOAL_ROLE_USER) {
                put_text(o, sys);
                put_text(o, "\n\n");
                sys = NULL;
            }
            put_text(o, m[i].content);
            put_special(o, "<end_of_turn>");
            put_text(o, "\n");
            break;
        case SHOAL_CHAT_PHI3:
            put_special(o, phi_roles[r]);
            put_text(o, "\n");
            put_text(o, m[i].content);
            put_special(o, "<|end|>");
            put_text(o, "\n");
            break;
        }
    }
    if (gen) {
        switch (tmpl) {
        case SHOAL_CHAT_CHATML:
            put_special(o, "<|im_start|>");
            put_text(o, "assistant\n");
            break;
        case SHOAL_CHAT_LLAMA3:
            put_special(o, "<|start_header_id|>");
            put_text(o, "assistant");
            put_special(o, "<|end_header_id|>");
            put_text(o, "\n\n");
            break;
        case SHOAL_CHAT_GEMMA:
            put_special(o, "<start_of_turn>");
            put_text(o, "model\n");
            break;
        case SHOAL_CHAT_PHI3:
            put_special(o, "<|assistant|>");
            put_text(o, "\n");
            break;
        }
    }
    return 0;
}

int shoal_chat_render(int tmpl, const shoal_tokenizer *tok, const shoal_chat_msg *msgs, int n,
                      bool add_generation_prompt, int32_t *out, int max, int *n_out)
{
    out_buf o = {tok, out, max < 0 ? 0 : max, 0, 0};
    int rc = 0;
    if (n < 0 || tmpl < 0 || tmpl >= SHOAL_CHAT__COUNT)
        return SHOAL_ERR_ARG;
    for (int i = 0; i < n; i++)
        if (msgs[i].role < SHOAL_ROLE_SYSTEM || msgs[i].role > SHOAL_ROLE_ASSISTANT ||
            !msgs[i].content)
            return SHOAL_ERR_ARG;
    switch (tmpl) {
    case SHOAL_CHAT_NONE: {
        /* Plain continuation: BOS, then the contents as one text. */
        put_bos(&o);
        for (int i = 0; i < n; i++)
            put_text(&o, msgs[i].content);
        break;
    }
    case SHOAL_CHAT_LLAMA2:
    case SHOAL_CHAT_MISTRAL:
        rc = render_llama2_like(&o, msgs, n, tmpl == SHOAL_CHAT_MISTRAL);
        break;
    default:
        rc = render_tagged(&o, tmpl, msgs, n, add_generation_prompt);
        break;
    }
    *n_out = o.n;
    if (rc)
        return rc;
    if (o.err)
        return o.err;
    return o.n > o.max ? SHOAL_ERR_RANGE : 0;
}

int32_t shoal_chat_end_token(int tmpl, const shoal_tokenizer *tok)
{
    const char *m = NULL;
    switch (tmpl) {
    case SHOAL_CHAT_CHATML: m = "<|im_end|>"; break;
    case SHOAL_CHAT_LLAMA3: m = "<|eot_id|>"; break;
    case SHOAL_CHAT_GEMMA: m = "<end_of_turn>"; break;
    case SHOAL_CHAT_PHI3: m = "<|end|>"; break;
    default: return -1;
    }
    return shoal_tokenizer_find(tok, m, strlen(m));
}
