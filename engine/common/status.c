/* status.c: the per-thread error message behind vkl_fail() and vkllm_last_error(). */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char error_message[VKL_ERROR_MAX];

vkllm_status vkl_fail(vkllm_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    return status;
}

vkllm_status vkl_fail_wrap(vkllm_status status, const char *fmt, ...) {
    char previous[VKL_ERROR_MAX];
    memcpy(previous, error_message, sizeof previous);
    va_list args;
    va_start(args, fmt);
    int prefix_len = vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    if (prefix_len >= 0 && (size_t)prefix_len < sizeof error_message)
        snprintf(error_message + prefix_len, sizeof error_message - (size_t)prefix_len, "%s",
                 previous);
    return status;
}

void vkl_clear_error(void) {
    error_message[0] = '\0';
}

const char *vkllm_last_error(void) {
    return error_message;
}

const char *vkllm_status_name(vkllm_status status) {
    switch (status) {
    case VKLLM_OK:
        return "VKLLM_OK";
    case VKLLM_ERR_INVALID_ARGUMENT:
        return "VKLLM_ERR_INVALID_ARGUMENT";
    case VKLLM_ERR_IO:
        return "VKLLM_ERR_IO";
    case VKLLM_ERR_FORMAT:
        return "VKLLM_ERR_FORMAT";
    case VKLLM_ERR_UNSUPPORTED:
        return "VKLLM_ERR_UNSUPPORTED";
    case VKLLM_ERR_OUT_OF_HOST_MEMORY:
        return "VKLLM_ERR_OUT_OF_HOST_MEMORY";
    case VKLLM_ERR_OUT_OF_DEVICE_MEMORY:
        return "VKLLM_ERR_OUT_OF_DEVICE_MEMORY";
    case VKLLM_ERR_NO_DEVICE:
        return "VKLLM_ERR_NO_DEVICE";
    case VKLLM_ERR_VULKAN:
        return "VKLLM_ERR_VULKAN";
    case VKLLM_ERR_DEVICE_LOST:
        return "VKLLM_ERR_DEVICE_LOST";
    case VKLLM_ERR_TOO_LONG:
        return "VKLLM_ERR_TOO_LONG";
    case VKLLM_ERR_CANCELLED:
        return "VKLLM_ERR_CANCELLED";
    case VKLLM_ERR_BUSY:
        return "VKLLM_ERR_BUSY";
    case VKLLM_ERR_NOT_FOUND:
        return "VKLLM_ERR_NOT_FOUND";
    case VKLLM_ERR_INTERNAL:
        return "VKLLM_ERR_INTERNAL";
    }
    return "VKLLM_ERR_UNKNOWN";
}
