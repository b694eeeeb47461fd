/*
 * The project's one error enum. Values are appended, never renumbered or
 * reused: they travel on the wire in error replies (proto/) and appear in
 * logs. shoal_strerror() never returns NULL.
 *
 * THREAD SAFETY: all functions are thread-safe.
 */
#ifndef SHOAL_KERNELS_ERR_H
#define SHOAL_KERNELS_ERR_H

typedef enum shoal_err {
    SHOAL_OK = 0,
    SHOAL_ERR_NOMEM = 1,      /* an allocation failed */
    SHOAL_ERR_IO = 2,         /* a read, write, open or mmap failed */
    SHOAL_ERR_FORMAT = 3,     /* malformed input: file or message */
    SHOAL_ERR_UNSUPPORTED = 4,/* valid but not supported (type, arch, version) */
    SHOAL_ERR_RANGE = 5,      /* a value outside its allowed range */
    SHOAL_ERR_NOTFOUND = 6,   /* a key, tensor or peer that is not there */
    SHOAL_ERR_ARG = 7,        /* a bad argument from the caller or user */
    SHOAL_ERR_CONTEXT = 8,    /* context (KV cache) full */
    SHOAL_ERR_BUSY = 9,       /* resource temporarily exhausted: retry later */
    SHOAL_ERR_TIMEOUT = 10,   /* no answer in time */
    SHOAL_ERR_PROTOCOL = 11,  /* a peer broke the protocol */
    SHOAL_ERR_VERSION = 12,   /* protocol version mismatch */
    SHOAL_ERR_AUTH = 13,      /* signature or key check failed */
    SHOAL_ERR_MODEL = 14,     /* model identity mismatch */
    SHOAL_ERR_SESSION = 15,   /* unknown or expired session */
    SHOAL_ERR_INTERNAL = 16,  /* a bug on the other side */
    SHOAL_ERR_CANCELLED = 17, /* stopped by request */
    SHOAL_ERR__COUNT
} shoal_err;

_Static_assert(SHOAL_ERR_FORMAT == 3, "error codes travel on the wire: never renumber");
_Static_assert(SHOAL_ERR_CANCELLED == 17, "error codes travel on the wire: never renumber");

/* A short lowercase description of err, e.g. "malformed input". */
const char *shoal_strerror(int err);

/* A short identifier of err for labels and logs, e.g. "format", "busy";
 * NULL for a value outside the enum. */
const char *shoal_err_name(int err);

#endif
