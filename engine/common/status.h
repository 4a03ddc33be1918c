/* status.h: how library code reports failure.
 *
 * Every fallible function returns vkllm_status. On failure it calls vkl_fail(),
 * which formats the reason into a per-thread buffer and returns the code, so an
 * error path reads `return vkl_fail(VKLLM_ERR_FORMAT, "gguf %s: ...", path);`.
 * Callers that add context use vkl_fail_wrap(), which prefixes the current
 * message. The library never aborts or exits: a broken invariant is reported
 * as VKLLM_ERR_INTERNAL. */
#ifndef VKL_STATUS_H
#define VKL_STATUS_H

#include "vkllm_status.h"

#if defined(__GNUC__)
#define VKL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VKL_PRINTF(f, a)
#endif

#define VKL_ERROR_MAX 1024

/* Records a formatted message for this thread and returns `status`. */
vkllm_status vkl_fail(vkllm_status status, const char *fmt, ...) VKL_PRINTF(2, 3);

/* Prefixes the thread's current message with a formatted context
 * ("loading model x: " + old message) and returns `status`. */
vkllm_status vkl_fail_wrap(vkllm_status status, const char *fmt, ...) VKL_PRINTF(2, 3);

/* Clears the thread's message (tests use it between cases). */
void vkl_clear_error(void);

/* Propagates a failure from a call whose status the caller does not change. */
#define VKL_TRY(expr)                                                                              \
    do {                                                                                           \
        vkllm_status vkl_try_status_ = (expr);                                                     \
        if (vkl_try_status_ != VKLLM_OK) return vkl_try_status_;                                   \
    } while (0)

#endif
