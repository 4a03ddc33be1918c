/* gguf_write.c: the GGUF v3 writer behind gguf_write.h.
 *
 * Each metadata pair is serialized (little-endian) when it is added and kept as its
 * own byte string, so replacing "general.alignment" later is a swap of one entry.
 * Tensors are recorded as descriptors; their offsets are computed at write time as
 * the running sum of aligned sizes in insertion order (the layout llama.cpp checks).
 * Invariants: keys are unique and non-empty; tensor names unique, 1..63 bytes; every
 * tensor's shape has a known byte size that fits in int64; the alignment is a power
 * of two and cannot change once a tensor exists. */
#include "model/gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITER_MAX_TENSOR_NAME 63u
#define WRITER_DEFAULT_ALIGNMENT 32u

typedef struct byte_buf {
    uint8_t *data;
    uint64_t len;
    uint64_t cap;
    bool failed; /* an allocation failed: the buffer content is incomplete */
} byte_buf;

typedef struct kv_entry {
    char *key;
    byte_buf bytes; /* key string + type + value, ready to write */
} kv_entry;

typedef struct tensor_entry {
    gguf_writer_tensor_desc desc; /* desc.name is owned */
    const void *data;
    gguf_writer_fill_fn fill;
    void *user;
} tensor_entry;

struct gguf_writer {
    kv_entry *kvs;
    uint64_t n_kvs, cap_kvs;
    tensor_entry *tensors;
    uint64_t n_tensors, cap_tensors;
    uint32_t alignment;
};

/* ------------------------------------------------------------------ byte buffers */

static void buf_reserve(byte_buf *b, uint64_t extra) {
    if (b->failed) return;
    if (extra > UINT64_MAX - b->len) {
        b->failed = true;
        return;
    }
    if (b->len + extra <= b->cap) return;
    uint64_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra)
        cap = cap > UINT64_MAX / 2 ? b->len + extra : cap * 2;
    uint8_t *data = cap <= SIZE_MAX ? realloc(b->data, (size_t)cap) : NULL;
    if (!data) {
        b->failed = true;
        return;
    }
    b->data = data;
    b->cap = cap;
}

static void buf_put(byte_buf *b, const void *src, uint64_t n) {
    buf_reserve(b, n);
    if (b->failed || n == 0) return;
    memcpy(b->data + b->len, src, (size_t)n);
    b->len += n;
}

static void buf_put_le(byte_buf *b, uint64_t v, uint32_t bytes) {
    uint8_t tmp[8];
    for (uint32_t i = 0; i < bytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    buf_put(b, tmp, bytes);
}

static void buf_put_str(byte_buf *b, const char *s, uint64_t len) {
    buf_put_le(b, len, 8);
    buf_put(b, s, len);
}

/* ------------------------------------------------------------------ create/destroy */

vkllm_status gguf_writer_create(gguf_writer **out) {
    if (!out) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_writer_create: null out");
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf_writer_create: no memory");
    w->alignment = WRITER_DEFAULT_ALIGNMENT;
    *out = w;
    return VKLLM_OK;
}

void gguf_writer_destroy(gguf_writer *w) {
    if (!w) return;
    for (uint64_t i = 0; i < w->n_kvs; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].bytes.data);
    }
    for (uint64_t i = 0; i < w->n_tensors; i++)
        free((char *)w->tensors[i].desc.name);
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* ------------------------------------------------------------------ metadata */

static kv_entry *find_kv(gguf_writer *w, const char *key) {
    for (uint64_t i = 0; i < w->n_kvs; i++)
        if (!strcmp(w->kvs[i].key, key)) return &w->kvs[i];
    return NULL;
}

static vkllm_status check_key(gguf_writer *w, const char *key) {
    if (!w || !key) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: null argument");
    if (!key[0]) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: empty key");
    if (strlen(key) > 65535)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key longer than 65535 bytes");
    if (find_kv(w, key))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: duplicate key '%s'", key);
    return VKLLM_OK;
}

/* Appends the entry (key already checked); takes ownership of bytes. */
static vkllm_status push_kv(gguf_writer *w, const char *key, byte_buf bytes) {
    if (bytes.failed) {
        free(bytes.data);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory for key '%s'", key);
    }
    if (w->n_kvs == w->cap_kvs) {
        uint64_t cap = w->cap_kvs ? 2 * w->cap_kvs : 16;
        kv_entry *kvs = realloc(w->kvs, cap * sizeof *kvs);
        if (!kvs) {
            free(bytes.data);
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory");
        }
        w->kvs = kvs;
        w->cap_kvs = cap;
    }
    char *copy = strdup(key);
    if (!copy) {
        free(bytes.data);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory");
    }
    w->kvs[w->n_kvs].key = copy;
    w->kvs[w->n_kvs].bytes = bytes;
    w->n_kvs++;
    return VKLLM_OK;
}

static byte_buf start_kv(const char *key, gguf_value_type type) {
    byte_buf b = {0};
    buf_put_str(&b, key, strlen(key));
    buf_put_le(&b, (uint32_t)type, 4);
    return b;
}

/* The value of general.alignment decides the tensor layout: validate and adopt it. */
static vkllm_status check_alignment_key(gguf_writer *w, const char *key, gguf_value_type type,
                                        uint64_t value) {
    if (strcmp(key, "general.alignment") != 0) return VKLLM_OK;
    if (type != GGUF_TYPE_UINT32)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: general.alignment must be uint32, not %s",
                        gguf_value_type_name(type));
    if (value == 0 || (value & (value - 1)))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: general.alignment %llu is not a power of two",
                        (unsigned long long)value);
    if (w->n_tensors)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: general.alignment must be set before adding tensors");
    w->alignment = (uint32_t)value;
    return VKLLM_OK;
}

static vkllm_status add_scalar(gguf_writer *w, const char *key, gguf_value_type type,
                               uint64_t bits) {
    VKL_TRY(check_key(w, key));
    VKL_TRY(check_alignment_key(w, key, type, bits));
    byte_buf b = start_kv(key, type);
    buf_put_le(&b, bits, gguf_value_type_size(type));
    return push_kv(w, key, b);
}

vkllm_status gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment) {
    if (!w) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: null writer");
    kv_entry *existing = find_kv(w, "general.alignment");
    if (!existing) return gguf_writer_add_u32(w, "general.alignment", alignment);
    VKL_TRY(check_alignment_key(w, "general.alignment", GGUF_TYPE_UINT32, alignment));
    byte_buf b = start_kv("general.alignment", GGUF_TYPE_UINT32);
    buf_put_le(&b, alignment, 4);
    if (b.failed) {
        free(b.data);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory");
    }
    free(existing->bytes.data);
    existing->bytes = b;
    return VKLLM_OK;
}

vkllm_status gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT8, v);
}
vkllm_status gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT8, (uint8_t)v);
}
vkllm_status gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT16, v);
}
vkllm_status gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT16, (uint16_t)v);
}
vkllm_status gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT32, v);
}
vkllm_status gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT32, (uint32_t)v);
}
vkllm_status gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v) {
    return add_scalar(w, key, GGUF_TYPE_UINT64, v);
}
vkllm_status gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v) {
    return add_scalar(w, key, GGUF_TYPE_INT64, (uint64_t)v);
}
vkllm_status gguf_writer_add_f32(gguf_writer *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, bits);
}
vkllm_status gguf_writer_add_f64(gguf_writer *w, const char *key, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return add_scalar(w, key, GGUF_TYPE_FLOAT64, bits);
}
vkllm_status gguf_writer_add_bool(gguf_writer *w, const char *key, bool v) {
    return add_scalar(w, key, GGUF_TYPE_BOOL, v ? 1 : 0);
}

vkllm_status gguf_writer_add_str_n(gguf_writer *w, const char *key, const char *value,
                                   uint64_t len) {
    VKL_TRY(check_key(w, key));
    if (!value && len)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key '%s': null string", key);
    VKL_TRY(check_alignment_key(w, key, GGUF_TYPE_STRING, 0));
    byte_buf b = start_kv(key, GGUF_TYPE_STRING);
    buf_put_str(&b, value, len);
    return push_kv(w, key, b);
}

vkllm_status gguf_writer_add_str(gguf_writer *w, const char *key, const char *value) {
    if (!value) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: null string value");
    return gguf_writer_add_str_n(w, key, value, strlen(value));
}

vkllm_status gguf_writer_add_array(gguf_writer *w, const char *key, gguf_value_type elem_type,
                                   const void *elems, uint64_t count) {
    VKL_TRY(check_key(w, key));
    uint32_t size = gguf_value_type_size(elem_type);
    if (size == 0)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: key '%s': %s arrays go through the string/none API, not "
                        "gguf_writer_add_array",
                        key, gguf_value_type_name(elem_type));
    if (!elems && count)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key '%s': null elements", key);
    VKL_TRY(check_alignment_key(w, key, GGUF_TYPE_ARRAY, 0));
    const uint8_t *src = elems;
    if (elem_type == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < count; i++)
            if (src[i] > 1)
                return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                                "gguf writer: key '%s': bool element %llu is %u (not 0/1)", key,
                                (unsigned long long)i, src[i]);
    if (count > UINT64_MAX / size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key '%s': count overflows", key);
    byte_buf b = start_kv(key, GGUF_TYPE_ARRAY);
    buf_put_le(&b, (uint32_t)elem_type, 4);
    buf_put_le(&b, count, 8);
    buf_reserve(&b, count * size);
    for (uint64_t i = 0; i < count && !b.failed; i++) {
        /* Elements are in host order; emit little-endian. */
        uint64_t v = 0;
        switch (size) {
        case 1:
            v = src[i];
            break;
        case 2: {
            uint16_t x;
            memcpy(&x, src + 2 * i, 2);
            v = x;
            break;
        }
        case 4: {
            uint32_t x;
            memcpy(&x, src + 4 * i, 4);
            v = x;
            break;
        }
        default:
            memcpy(&v, src + 8 * i, 8);
            break;
        }
        buf_put_le(&b, v, size);
    }
    return push_kv(w, key, b);
}

vkllm_status gguf_writer_add_str_array_n(gguf_writer *w, const char *key, const gguf_str *strs,
                                         uint64_t count) {
    VKL_TRY(check_key(w, key));
    if (!strs && count)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key '%s': null strings", key);
    VKL_TRY(check_alignment_key(w, key, GGUF_TYPE_ARRAY, 0));
    byte_buf b = start_kv(key, GGUF_TYPE_ARRAY);
    buf_put_le(&b, GGUF_TYPE_STRING, 4);
    buf_put_le(&b, count, 8);
    for (uint64_t i = 0; i < count && !b.failed; i++) {
        if (!strs[i].ptr && strs[i].len) {
            free(b.data);
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "gguf writer: key '%s': string %llu is null", key,
                            (unsigned long long)i);
        }
        buf_put_str(&b, strs[i].ptr, strs[i].len);
    }
    return push_kv(w, key, b);
}

vkllm_status gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *strs,
                                       uint64_t count) {
    VKL_TRY(check_key(w, key));
    if (!strs && count)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: key '%s': null strings", key);
    VKL_TRY(check_alignment_key(w, key, GGUF_TYPE_ARRAY, 0));
    byte_buf b = start_kv(key, GGUF_TYPE_ARRAY);
    buf_put_le(&b, GGUF_TYPE_STRING, 4);
    buf_put_le(&b, count, 8);
    for (uint64_t i = 0; i < count && !b.failed; i++) {
        if (!strs[i]) {
            free(b.data);
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "gguf writer: key '%s': string %llu is null", key,
                            (unsigned long long)i);
        }
        buf_put_str(&b, strs[i], strlen(strs[i]));
    }
    return push_kv(w, key, b);
}

/* ------------------------------------------------------------------ tensors */

static vkllm_status add_tensor(gguf_writer *w, const char *name, uint32_t n_dims,
                               const uint64_t *ne, ggml_type type, const void *data,
                               gguf_writer_fill_fn fill, void *user) {
    if (!w || !name || (!ne && n_dims))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: null tensor argument");
    size_t len = strlen(name);
    if (len == 0 || len > WRITER_MAX_TENSOR_NAME)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: tensor name '%s' must be 1..%u bytes (is %zu)", name,
                        WRITER_MAX_TENSOR_NAME, len);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        if (!strcmp(w->tensors[i].desc.name, name))
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: tensor '%s': n_dims %u not in 1..4", name, n_dims);
    ggml_type_info info = ggml_type_get_info(type);
    if (info.block_elems == 0)
        return vkl_fail(VKLLM_ERR_UNSUPPORTED,
                        "gguf writer: tensor '%s': type %s (%u) has no "
                        "known layout",
                        name, info.name, (unsigned)type);
    gguf_writer_tensor_desc desc = {.n_dims = n_dims, .type = type};
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        desc.ne[d] = d < n_dims ? ne[d] : 1;
    if (desc.ne[0] % info.block_elems)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "gguf writer: tensor '%s': ne[0] = %llu is not a multiple of the %s "
                        "block size %u",
                        name, (unsigned long long)desc.ne[0], info.name, info.block_elems);
    uint64_t bytes = ggml_row_bytes(type, desc.ne[0]);
    uint64_t elems = desc.ne[0];
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        if (desc.ne[d] > (uint64_t)INT64_MAX || (d > 0 && desc.ne[d] &&
                                                 (bytes > (uint64_t)INT64_MAX / desc.ne[d] ||
                                                  elems > (uint64_t)INT64_MAX / desc.ne[d])))
            return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT,
                            "gguf writer: tensor '%s': shape overflows int64", name);
        if (d > 0) {
            bytes *= desc.ne[d];
            elems *= desc.ne[d];
        }
    }
    desc.n_bytes = bytes;
    if (!data && !fill && bytes)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: tensor '%s': no data", name);
    if (w->n_tensors == w->cap_tensors) {
        uint64_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        tensor_entry *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory");
        w->tensors = t;
        w->cap_tensors = cap;
    }
    char *copy = strdup(name);
    if (!copy) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory");
    desc.name = copy;
    w->tensors[w->n_tensors++] = (tensor_entry){desc, data, fill, user};
    return VKLLM_OK;
}

vkllm_status gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims,
                                    const uint64_t *ne, ggml_type type, const void *data) {
    return add_tensor(w, name, n_dims, ne, type, data, NULL, NULL);
}

vkllm_status gguf_writer_add_tensor_fill(gguf_writer *w, const char *name, uint32_t n_dims,
                                         const uint64_t *ne, ggml_type type,
                                         gguf_writer_fill_fn fill, void *user) {
    if (!fill) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf writer: null fill callback");
    return add_tensor(w, name, n_dims, ne, type, NULL, fill, user);
}

/* ------------------------------------------------------------------ layout + output */

static uint64_t align_up(uint64_t x, uint64_t a) {
    return x + ((a - x % a) % a);
}

/* Size of everything before the tensor data, excluding the padding to data_start. */
static uint64_t header_bytes(const gguf_writer *w) {
    uint64_t n = 4 + 4 + 8 + 8;
    for (uint64_t i = 0; i < w->n_kvs; i++)
        n += w->kvs[i].bytes.len;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const gguf_writer_tensor_desc *d = &w->tensors[i].desc;
        n += 8 + strlen(d->name) + 4 + 8ull * d->n_dims + 4 + 8;
    }
    return n;
}

uint64_t gguf_writer_file_size(const gguf_writer *w) {
    if (!w) return 0;
    uint64_t n = header_bytes(w);
    if (w->n_tensors == 0) return n;
    n = align_up(n, w->alignment);
    for (uint64_t i = 0; i < w->n_tensors; i++)
        n += align_up(w->tensors[i].desc.n_bytes, w->alignment);
    return n;
}

/* Output: either a FILE or a preallocated memory image. */
typedef struct sink {
    FILE *fp;
    uint8_t *mem;
    uint64_t pos;
    const char *label;
} sink;

static vkllm_status sink_put(sink *s, const void *src, uint64_t n) {
    if (n == 0) return VKLLM_OK;
    if (s->fp) {
        if (fwrite(src, 1, (size_t)n, s->fp) != n)
            return vkl_fail(VKLLM_ERR_IO, "%s: write failed at offset %llu", s->label,
                            (unsigned long long)s->pos);
    } else {
        memcpy(s->mem + s->pos, src, (size_t)n);
    }
    s->pos += n;
    return VKLLM_OK;
}

static vkllm_status sink_pad(sink *s, uint64_t alignment) {
    static const uint8_t zeros[256];
    uint64_t pad = (alignment - s->pos % alignment) % alignment;
    while (pad) {
        uint64_t n = pad < sizeof zeros ? pad : sizeof zeros;
        VKL_TRY(sink_put(s, zeros, n));
        pad -= n;
    }
    return VKLLM_OK;
}

static vkllm_status write_all(gguf_writer *w, sink *s) {
    byte_buf head = {0};
    buf_put(&head, "GGUF", 4);
    buf_put_le(&head, 3, 4);
    buf_put_le(&head, w->n_tensors, 8);
    buf_put_le(&head, w->n_kvs, 8);
    for (uint64_t i = 0; i < w->n_kvs; i++)
        buf_put(&head, w->kvs[i].bytes.data, w->kvs[i].bytes.len);
    uint64_t offset = 0;
    uint64_t max_fill = 0;
    for (uint64_t i = 0; i < w->n_tensors; i++) {
        const tensor_entry *t = &w->tensors[i];
        buf_put_str(&head, t->desc.name, strlen(t->desc.name));
        buf_put_le(&head, t->desc.n_dims, 4);
        for (uint32_t d = 0; d < t->desc.n_dims; d++)
            buf_put_le(&head, t->desc.ne[d], 8);
        buf_put_le(&head, (uint32_t)t->desc.type, 4);
        buf_put_le(&head, offset, 8);
        offset += align_up(t->desc.n_bytes, w->alignment);
        if (t->fill && t->desc.n_bytes > max_fill) max_fill = t->desc.n_bytes;
    }
    if (head.failed) {
        free(head.data);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory for the header", s->label);
    }
    vkllm_status st = sink_put(s, head.data, head.len);
    free(head.data);
    VKL_TRY(st);
    if (w->n_tensors == 0) return VKLLM_OK;
    VKL_TRY(sink_pad(s, w->alignment));

    /* A file sink needs a staging buffer for fill callbacks; memory fills in place. */
    uint8_t *scratch = NULL;
    if (s->fp && max_fill) {
        scratch = max_fill <= SIZE_MAX ? malloc((size_t)max_fill) : NULL;
        if (!scratch)
            return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory to stage %llu bytes",
                            s->label, (unsigned long long)max_fill);
    }
    for (uint64_t i = 0; i < w->n_tensors && st == VKLLM_OK; i++) {
        const tensor_entry *t = &w->tensors[i];
        if (t->fill) {
            uint8_t *dst = s->fp ? scratch : s->mem + s->pos;
            st = t->fill(t->user, &t->desc, dst);
            if (st != VKLLM_OK) {
                vkl_fail_wrap(st, "%s: filling tensor '%s': ", s->label, t->desc.name);
                break;
            }
            if (s->fp)
                st = sink_put(s, scratch, t->desc.n_bytes);
            else
                s->pos += t->desc.n_bytes;
        } else {
            st = sink_put(s, t->data, t->desc.n_bytes);
        }
        if (st == VKLLM_OK) st = sink_pad(s, w->alignment);
    }
    free(scratch);
    return st;
}

vkllm_status gguf_writer_write_memory(gguf_writer *w, void **out_data, uint64_t *out_size) {
    if (!w || !out_data || !out_size)
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_writer_write_memory: null argument");
    uint64_t size = gguf_writer_file_size(w);
    uint8_t *mem = size <= SIZE_MAX ? malloc(size ? (size_t)size : 1) : NULL;
    if (!mem)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf writer: no memory for %llu bytes",
                        (unsigned long long)size);
    sink s = {.mem = mem, .label = "(memory gguf)"};
    vkllm_status st = write_all(w, &s);
    if (st == VKLLM_OK && s.pos != size)
        st = vkl_fail(VKLLM_ERR_INTERNAL, "gguf writer: wrote %llu bytes, planned %llu",
                      (unsigned long long)s.pos, (unsigned long long)size);
    if (st != VKLLM_OK) {
        free(mem);
        return st;
    }
    *out_data = mem;
    *out_size = size;
    return VKLLM_OK;
}

vkllm_status gguf_writer_write_file(gguf_writer *w, const char *path) {
    if (!w || !path) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_writer_write_file: null");
    FILE *fp = fopen(path, "wb");
    if (!fp) return vkl_fail(VKLLM_ERR_IO, "%s: cannot create", path);
    sink s = {.fp = fp, .label = path};
    vkllm_status st = write_all(w, &s);
    if (fclose(fp) != 0 && st == VKLLM_OK)
        st = vkl_fail(VKLLM_ERR_IO, "%s: write failed on close", path);
    if (st != VKLLM_OK) remove(path);
    return st;
}
