/* Descriptions for the project's error enum (see err.h). */
#include <stddef.h>

#include "kernels/err.h"

static const char *const shoal_err_names[SHOAL_ERR__COUNT] = {
    [SHOAL_OK] = "success",
    [SHOAL_ERR_NOMEM] = "out of memory",
    [SHOAL_ERR_IO] = "input/output error",
    [SHOAL_ERR_FORMAT] = "malformed input",
    [SHOAL_ERR_UNSUPPORTED] = "not supported",
    [SHOAL_ERR_RANGE] = "value out of range",
    [SHOAL_ERR_NOTFOUND] = "not found",
    [SHOAL_ERR_ARG] = "invalid argument",
    [SHOAL_ERR_CONTEXT] = "context is full",
    [SHOAL_ERR_BUSY] = "busy, try again later",
    [SHOAL_ERR_TIMEOUT] = "timed out",
    [SHOAL_ERR_PROTOCOL] = "protocol violation",
    [SHOAL_ERR_VERSION] = "protocol version mismatch",
    [SHOAL_ERR_AUTH] = "authentication failed",
    [SHOAL_ERR_MODEL] = "model mismatch",
    [SHOAL_ERR_SESSION] = "unknown or expired session",
    [SHOAL_ERR_INTERNAL] = "internal error",
    [SHOAL_ERR_CANCELLED] = "cancelled",
};

const char *shoal_strerror(int err)
{
    if (err < 0)
        err = -err;
    if (err >= SHOAL_ERR__COUNT || !shoal_err_names[err])
        return "unknown error";
    return shoal_err_names[err];
}

static const char *const shoal_err_ids[SHOAL_ERR__COUNT] = {
    [SHOAL_OK] = "ok",
    [SHOAL_ERR_NOMEM] = "nomem",
    [SHOAL_ERR_IO] = "io",
    [SHOAL_ERR_FORMAT] = "format",
    [SHOAL_ERR_UNSUPPORTED] = "unsupported",
    [SHOAL_ERR_RANGE] = "range",
    [SHOAL_ERR_NOTFOUND] = "notfound",
    [SHOAL_ERR_ARG] = "arg",
    [SHOAL_ERR_CONTEXT] = "context",
    [SHOAL_ERR_BUSY] = "busy",
    [SHOAL_ERR_TIMEOUT] = "timeout",
    [SHOAL_ERR_PROTOCOL] = "protocol",
    [SHOAL_ERR_VERSION] = "version",
    [SHOAL_ERR_AUTH] = "auth",
    [SHOAL_ERR_MODEL] = "model",
    [SHOAL_ERR_SESSION] = "session",
    [SHOAL_ERR_INTERNAL] = "internal",
    [SHOAL_ERR_CANCELLED] = "cancelled",
};

const char *shoal_err_name(int err)
{
    if (err < 0)
        err = -err;
    if (err >= SHOAL_ERR__COUNT || !shoal_err_ids[err])
        return NULL;
    return shoal_err_ids[err];
}
