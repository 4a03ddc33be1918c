/* vkllm_status.h: the status codes every fallible vkllm call returns.
 *
 * A call returns VKLLM_OK or one of the codes below; the human-readable reason
 * (which file, which field, which offset, which Vulkan call) is kept per thread
 * and read with vkllm_last_error() right after the failing call. */
#ifndef VKLLM_STATUS_H
#define VKLLM_STATUS_H

/* VKLLM_API marks the functions libvkllm.so exports (its linker version script keeps
 * everything else inside it private); it gives them default visibility so that the API
 * stays exported in a build with -fvisibility=hidden. Define VKLLM_API before including
 * this header to override it. */
#ifndef VKLLM_API
#if defined(__GNUC__) || defined(__clang__)
#define VKLLM_API __attribute__((visibility("default")))
#else
#define VKLLM_API
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vkllm_status {
    VKLLM_OK = 0,
    VKLLM_ERR_INVALID_ARGUMENT, /* a caller passed a value outside its documented range */
    VKLLM_ERR_IO,               /* a file could not be opened, read, mapped or written */
    VKLLM_ERR_FORMAT,           /* a file or request body is malformed (names field and offset) */
    VKLLM_ERR_UNSUPPORTED,      /* valid input we do not handle: architecture, tensor type, ... */
    VKLLM_ERR_OUT_OF_HOST_MEMORY,
    VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
    VKLLM_ERR_NO_DEVICE, /* no Vulkan device, or none matching VKLLM_DEVICE */
    VKLLM_ERR_VULKAN,    /* any other Vulkan failure (message names the call) */
    VKLLM_ERR_DEVICE_LOST,
    VKLLM_ERR_TOO_LONG, /* a prompt or request that can never fit the context or cache */
    VKLLM_ERR_CANCELLED,
    VKLLM_ERR_BUSY, /* a queue is full; try again later */
    VKLLM_ERR_NOT_FOUND,
    VKLLM_ERR_INTERNAL, /* a broken invariant inside vkllm: a bug worth reporting */
} vkllm_status;

/* Short constant name of a status code, e.g. "VKLLM_ERR_FORMAT". */
VKLLM_API const char *vkllm_status_name(vkllm_status status);

/* The message of the most recent failure on the calling thread ("" if none). */
VKLLM_API const char *vkllm_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
