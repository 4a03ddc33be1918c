/* gguf.h: reading GGUF files (llama.cpp's model format, versions 2 and 3).
 *
 * gguf_open() memory-maps the file and validates all of it before returning:
 * header, every metadata key/value, the tensor table, alignment and that every
 * tensor's bytes lie inside the file. After that, lookups cannot fail on bounds.
 * On a malformed file the error message names the field and its file offset,
 * e.g. "model.gguf: tensor 3 'blk.0.attn_q.weight': data [a, b) past end of file
 * (size c) (tensor info at offset 0x1234)".
 *
 * Strings returned point into the mapping (not NUL-terminated: use gguf_str with
 * its length) and live as long as the gguf_file. Module prefix: gguf_. */
#ifndef VKL_GGUF_H
#define VKL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ggml tensor type ids as stored in files. */
typedef enum ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_COUNT = 40,
} ggml_type;

/* Block geometry of a type: elements per block and bytes per block; 0/0 for ids
 * vkllm cannot read (the IQ formats, removed ids). name is "Q4_K", "F16", ... or
 * "unknown". */
typedef struct ggml_type_info {
    const char *name;
    uint32_t block_elems;
    uint32_t block_bytes;
} ggml_type_info;
ggml_type_info ggml_type_get_info(uint32_t type);

typedef enum gguf_value_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
} gguf_value_type;

typedef struct gguf_str {
    const char *ptr; /* into the mapping; not NUL-terminated */
    uint64_t len;
} gguf_str;

/* One metadata value. Scalars are decoded; arrays point at their first element
 * in the mapping (use gguf_array_* to read elements). */
typedef struct gguf_value {
    gguf_value_type type;
    union {
        uint64_t u64; /* any unsigned integer type, and bool */
        int64_t i64;  /* any signed integer type */
        double f64;   /* float32 or float64 */
        gguf_str str;
        struct {
            gguf_value_type elem_type;
            uint64_t count;
            const uint8_t *data;  /* first element */
            uint64_t file_offset; /* of the first element */
            const gguf_str *strs; /* string arrays: every element, decoded at open */
        } array;
    };
} gguf_value;

typedef struct gguf_kv {
    gguf_str key;
    gguf_value value;
    uint64_t file_offset; /* where the key/value pair starts */
} gguf_kv;

#define GGUF_MAX_DIMS 4

typedef struct gguf_tensor {
    gguf_str name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] fastest-varying; unused dims are 1 */
    ggml_type type;
    uint64_t n_elements;
    uint64_t n_bytes;
    uint64_t data_offset; /* absolute offset in the file */
    const uint8_t *data;  /* into the mapping */
    uint64_t info_offset; /* where its tensor info starts in the file */
} gguf_tensor;

typedef struct gguf_file {
    char *path;
    const uint8_t *base; /* the mapping */
    uint64_t size;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_start;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    void *index; /* internal: name lookup */
    bool owns_mapping;
} gguf_file;

/* Opens and validates `path` (mmap). */
vkllm_status gguf_open(const char *path, gguf_file **out);
/* Validates an in-memory image (not copied: `data` must outlive the result). */
vkllm_status gguf_open_memory(const void *data, uint64_t size, const char *label, gguf_file **out);
void gguf_close(gguf_file *file);

/* Lookups by NUL-terminated name; NULL when absent. */
const gguf_kv *gguf_find_kv(const gguf_file *file, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *file, const char *name);

/* Typed getters with the conversions models need: any integer type for integer
 * keys (range-checked), float32/float64 for floats. They return
 * VKLLM_ERR_NOT_FOUND when the key is absent and VKLLM_ERR_FORMAT naming the
 * key when its type does not fit. */
vkllm_status gguf_get_u32(const gguf_file *file, const char *key, uint32_t *out);
vkllm_status gguf_get_u64(const gguf_file *file, const char *key, uint64_t *out);
vkllm_status gguf_get_f32(const gguf_file *file, const char *key, float *out);
vkllm_status gguf_get_bool(const gguf_file *file, const char *key, bool *out);
vkllm_status gguf_get_str(const gguf_file *file, const char *key, gguf_str *out);
/* An array-valued key: element type and count. */
vkllm_status gguf_get_array(const gguf_file *file, const char *key, gguf_value_type *elem_type,
                            uint64_t *count);

/* Element access of array values (index < count checked by the caller's loop;
 * out-of-range indices return a zero/empty value). String arrays are walked
 * once at open, so gguf_array_str is O(1). */
gguf_str gguf_array_str(const gguf_kv *kv, uint64_t index);
int64_t gguf_array_int(const gguf_kv *kv, uint64_t index);
double gguf_array_float(const gguf_kv *kv, uint64_t index);

/* True when `s` equals the NUL-terminated `c`. */
bool gguf_str_eq(gguf_str s, const char *c);

/* Additions (gguf helper) ------------------------------------------------- */

/* Signed integer getters: any integer type, range-checked like gguf_get_u32. */
vkllm_status gguf_get_i32(const gguf_file *file, const char *key, int32_t *out);
vkllm_status gguf_get_i64(const gguf_file *file, const char *key, int64_t *out);

/* "uint32", "string", "array", ...; "unknown" for other ids. */
const char *gguf_value_type_name(uint32_t type);
/* Payload size of a fixed-size value type (1, 2, 4 or 8); 0 for string/array/unknown. */
uint32_t gguf_value_type_size(uint32_t type);

/* Bytes of `n` elements of `type` (n a multiple of the block size), 0 when the type
 * has no known geometry or n is not a multiple of its block. */
uint64_t ggml_row_bytes(uint32_t type, uint64_t n);

#endif
