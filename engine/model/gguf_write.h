/* gguf_write.h: building GGUF v3 files (metadata + tensors), in memory or streamed to disk.
 *
 * Usage: gguf_writer_create(); add key/values and tensors in the order they should
 * appear; gguf_writer_write_file() or gguf_writer_write_memory(); gguf_writer_destroy().
 * Keys, names and metadata values are copied when added. Tensor bytes are NOT copied:
 * a tensor either points at caller memory (which must stay valid until the write) or
 * has a fill callback that produces its bytes during the write (so a large synthetic
 * model never needs all its tensors in memory at once).
 *
 * The file layout is the one llama.cpp requires: header, kv pairs, tensor infos, zero
 * padding to the alignment, then tensor data in info order with tensor i at offset
 * sum over j < i of align_up(size_j, alignment), each padded with zeros.
 * The alignment is 32 unless set with gguf_writer_set_alignment() (which writes the
 * "general.alignment" uint32 key) or by adding that key directly.
 * All functions return a status; the writer stays usable after a refused add. */
#ifndef VKL_GGUF_WRITE_H
#define VKL_GGUF_WRITE_H

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"

typedef struct gguf_writer gguf_writer;

/* Describes the tensor a fill callback is asked to produce. */
typedef struct gguf_writer_tensor_desc {
    const char *name; /* NUL-terminated copy owned by the writer */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    ggml_type type;
    uint64_t n_bytes;
} gguf_writer_tensor_desc;

/* Writes exactly desc->n_bytes bytes to dst. A non-OK status aborts the write. */
typedef vkllm_status (*gguf_writer_fill_fn)(void *user, const gguf_writer_tensor_desc *desc,
                                            uint8_t *dst);

vkllm_status gguf_writer_create(gguf_writer **out);
void gguf_writer_destroy(gguf_writer *writer);

/* Power of two, at least 1 (llama.cpp); adds/overrides "general.alignment".
 * Must be called before any tensor is added. */
vkllm_status gguf_writer_set_alignment(gguf_writer *writer, uint32_t alignment);

/* Scalars. Keys must be non-empty and unique. */
vkllm_status gguf_writer_add_u8(gguf_writer *writer, const char *key, uint8_t value);
vkllm_status gguf_writer_add_i8(gguf_writer *writer, const char *key, int8_t value);
vkllm_status gguf_writer_add_u16(gguf_writer *writer, const char *key, uint16_t value);
vkllm_status gguf_writer_add_i16(gguf_writer *writer, const char *key, int16_t value);
vkllm_status gguf_writer_add_u32(gguf_writer *writer, const char *key, uint32_t value);
vkllm_status gguf_writer_add_i32(gguf_writer *writer, const char *key, int32_t value);
vkllm_status gguf_writer_add_u64(gguf_writer *writer, const char *key, uint64_t value);
vkllm_status gguf_writer_add_i64(gguf_writer *writer, const char *key, int64_t value);
vkllm_status gguf_writer_add_f32(gguf_writer *writer, const char *key, float value);
vkllm_status gguf_writer_add_f64(gguf_writer *writer, const char *key, double value);
vkllm_status gguf_writer_add_bool(gguf_writer *writer, const char *key, bool value);
/* NUL-terminated string, or `len` bytes (may contain NULs). */
vkllm_status gguf_writer_add_str(gguf_writer *writer, const char *key, const char *value);
vkllm_status gguf_writer_add_str_n(gguf_writer *writer, const char *key, const char *value,
                                   uint64_t len);

/* Numeric/bool array: `count` host-order elements of elem_type packed back to back
 * (bool as one byte 0/1 each, e.g. a `bool[]` or `uint8_t[]`). */
vkllm_status gguf_writer_add_array(gguf_writer *writer, const char *key, gguf_value_type elem_type,
                                   const void *elems, uint64_t count);
/* String arrays: NUL-terminated strings, or gguf_str (pointer + length) entries. */
vkllm_status gguf_writer_add_str_array(gguf_writer *writer, const char *key,
                                       const char *const *strs, uint64_t count);
vkllm_status gguf_writer_add_str_array_n(gguf_writer *writer, const char *key, const gguf_str *strs,
                                         uint64_t count);

/* Tensors: name (1..63 bytes, unique), 1..4 dims with ne[0] a multiple of the type's
 * block size, a type with known geometry. `data` holds the tensor's bytes (size =
 * ggml_row_bytes(type, ne[0]) * ne[1] * ne[2] * ne[3]) and must outlive the write. */
vkllm_status gguf_writer_add_tensor(gguf_writer *writer, const char *name, uint32_t n_dims,
                                    const uint64_t *ne, ggml_type type, const void *data);
vkllm_status gguf_writer_add_tensor_fill(gguf_writer *writer, const char *name, uint32_t n_dims,
                                         const uint64_t *ne, ggml_type type,
                                         gguf_writer_fill_fn fill, void *user);

/* Total size of the file the writer would produce now. */
uint64_t gguf_writer_file_size(const gguf_writer *writer);

/* Streams the file to `path` (created/truncated; removed again on failure). */
vkllm_status gguf_writer_write_file(gguf_writer *writer, const char *path);
/* Builds the whole file in a malloc'ed buffer the caller frees. */
vkllm_status gguf_writer_write_memory(gguf_writer *writer, void **out_data, uint64_t *out_size);

#endif
