/* gguf.c: the GGUF reader (versions 2 and 3) behind gguf.h.
 *
 * gguf_open_memory() walks the whole image once and validates every field before
 * anything is handed out; gguf_open() maps the file read-only and does the same.
 * Invariants after a successful open:
 *   - every gguf_str, array and tensor data pointer lies inside [base, base + size);
 *   - keys are non-empty and unique, tensor names are unique (both indexed by hash);
 *   - every tensor has a known, sized type, ne0 a multiple of its block, element and
 *     byte counts that fit in int64, an offset that is a multiple of the alignment and
 *     equals the packed position llama.cpp requires, and data inside the file;
 *   - string arrays carry a decoded gguf_str per element (O(1) gguf_array_str).
 * Every count is compared against the bytes that remain before anything is
 * allocated for it, and all offset arithmetic is checked for overflow. Multi-byte
 * fields are assembled byte by byte, so the reader does not depend on host
 * endianness or alignment. */
#include "model/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_TENSOR_NAME 63u /* llama.cpp: GGML_MAX_NAME (64) including the NUL */
#define GGUF_MAX_KEY 65535u      /* spec limit on key length */
/* Smallest possible encodings, used to reject absurd counts before allocating. */
#define GGUF_MIN_KV_BYTES 13u          /* key length (8) + type (4) + 1-byte value */
#define GGUF_MIN_TENSOR_INFO_BYTES 24u /* name length (8) + n_dims (4) + type (4) + offset (8) */

/* ------------------------------------------------------------------ name index */

/* Open addressing with linear probing over (hash, index + 1); 0 marks an empty slot.
 * Capacity is a power of two at least twice the number of names. */
typedef struct name_slot {
    uint64_t hash;
    uint64_t index_plus_one;
    const char *ptr;
    uint64_t len;
} name_slot;

typedef struct name_table {
    name_slot *slots;
    uint64_t mask;
} name_table;

typedef struct gguf_index {
    name_table kv;
    name_table tensors;
} gguf_index;

static uint64_t hash_bytes(const char *ptr, uint64_t len) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 */
    for (uint64_t i = 0; i < len; i++) {
        h ^= (uint8_t)ptr[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool name_table_init(name_table *table, uint64_t n) {
    uint64_t cap = 8;
    while (cap < 2 * n)
        cap *= 2;
    table->slots = calloc(cap, sizeof *table->slots);
    table->mask = cap - 1;
    return table->slots != NULL;
}

/* Returns the index+1 of an equal name already present (no insert), or 0 after inserting. */
static uint64_t name_table_insert(name_table *table, gguf_str name, uint64_t index) {
    uint64_t h = hash_bytes(name.ptr, name.len);
    for (uint64_t i = h & table->mask;; i = (i + 1) & table->mask) {
        name_slot *slot = &table->slots[i];
        if (slot->index_plus_one == 0) {
            slot->hash = h;
            slot->index_plus_one = index + 1;
            slot->ptr = name.ptr;
            slot->len = name.len;
            return 0;
        }
        if (slot->hash == h && slot->len == name.len && !memcmp(slot->ptr, name.ptr, name.len))
            return slot->index_plus_one;
    }
}

static uint64_t name_table_find(const name_table *table, const char *name) {
    if (!table->slots || !name) return 0;
    uint64_t len = strlen(name);
    uint64_t h = hash_bytes(name, len);
    for (uint64_t i = h & table->mask;; i = (i + 1) & table->mask) {
        const name_slot *slot = &table->slots[i];
        if (slot->index_plus_one == 0) return 0;
        if (slot->hash == h && slot->len == len && !memcmp(slot->ptr, name, len))
            return slot->index_plus_one;
    }
}

/* ------------------------------------------------------------------ value types */

const char *gguf_value_type_name(uint32_t type) {
    static const char *const names[] = {"uint8",  "int8",    "uint16", "int16",  "uint32",
                                        "int32",  "float32", "bool",   "string", "array",
                                        "uint64", "int64",   "float64"};
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

uint32_t gguf_value_type_size(uint32_t type) {
    switch (type) {
    case GGUF_TYPE_UINT8:
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_BOOL:
        return 1;
    case GGUF_TYPE_UINT16:
    case GGUF_TYPE_INT16:
        return 2;
    case GGUF_TYPE_UINT32:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_FLOAT32:
        return 4;
    case GGUF_TYPE_UINT64:
    case GGUF_TYPE_INT64:
    case GGUF_TYPE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

static bool is_unsigned_int(uint32_t t) {
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool is_signed_int(uint32_t t) {
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static uint64_t load_le(const uint8_t *p, uint32_t n) {
    uint64_t v = 0;
    for (uint32_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int64_t sign_extend(uint64_t v, uint32_t bytes) {
    if (bytes == 8) return (int64_t)v;
    uint64_t sign = 1ull << (8 * bytes - 1);
    return (int64_t)((v ^ sign) - sign);
}

static float f32_from_bits(uint32_t bits) {
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static double f64_from_bits(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Decodes one fixed-size scalar of `type` at p into v (type already set by caller). */
static void decode_scalar(uint32_t type, const uint8_t *p, gguf_value *v) {
    uint32_t size = gguf_value_type_size(type);
    uint64_t raw = load_le(p, size);
    if (type == GGUF_TYPE_FLOAT32)
        v->f64 = f32_from_bits((uint32_t)raw);
    else if (type == GGUF_TYPE_FLOAT64)
        v->f64 = f64_from_bits(raw);
    else if (is_signed_int(type))
        v->i64 = sign_extend(raw, size);
    else
        v->u64 = raw; /* unsigned ints and bool */
}

/* ------------------------------------------------------------------ parser */

typedef struct parser {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
    const char *label;
} parser;

/* Formats `name` for messages: printable ASCII only, at most 64 bytes shown. */
static const char *printable(gguf_str name, char buf[80]) {
    uint64_t n = name.len < 64 ? name.len : 64;
    uint64_t o = 0;
    for (uint64_t i = 0; i < n; i++) {
        char c = name.ptr[i];
        buf[o++] = (c >= 32 && c < 127) ? c : '?';
    }
    if (name.len > n) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

/* "<label>: <message> (at offset N (0xN))". */
static vkllm_status VKL_PRINTF(4, 5)
    fail_at(const parser *p, vkllm_status status, uint64_t offset, const char *fmt, ...) {
    char msg[VKL_ERROR_MAX];
    va_list args;
    va_start(args, fmt);
    vsnprintf(msg, sizeof msg, fmt, args);
    va_end(args);
    return vkl_fail(status, "%s: %s (at offset %llu (0x%llx))", p->label, msg,
                    (unsigned long long)offset, (unsigned long long)offset);
}

/* snprintf for field names; truncation only shortens a message. */
static void VKL_PRINTF(3, 4) format_field(char *buf, size_t size, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(buf, size, fmt, args);
    va_end(args);
}

static uint64_t remaining(const parser *p) {
    return p->size - p->pos;
}

static vkllm_status need(const parser *p, uint64_t n, const char *field) {
    if (n > remaining(p))
        return fail_at(p, VKLLM_ERR_FORMAT, p->pos,
                       "truncated file: %s needs %llu bytes but only %llu remain", field,
                       (unsigned long long)n, (unsigned long long)remaining(p));
    return VKLLM_OK;
}

static vkllm_status read_uint(parser *p, uint32_t bytes, const char *field, uint64_t *out) {
    VKL_TRY(need(p, bytes, field));
    *out = load_le(p->base + p->pos, bytes);
    p->pos += bytes;
    return VKLLM_OK;
}

static vkllm_status read_u32(parser *p, const char *field, uint32_t *out) {
    uint64_t v;
    VKL_TRY(read_uint(p, 4, field, &v));
    *out = (uint32_t)v;
    return VKLLM_OK;
}

static vkllm_status read_u64(parser *p, const char *field, uint64_t *out) {
    return read_uint(p, 8, field, out);
}

static vkllm_status read_str(parser *p, const char *field, gguf_str *out) {
    uint64_t at = p->pos;
    uint64_t len;
    VKL_TRY(read_u64(p, field, &len));
    if (len > remaining(p))
        return fail_at(p, VKLLM_ERR_FORMAT, at,
                       "%s: string length %llu is longer than the %llu bytes left in the file",
                       field, (unsigned long long)len, (unsigned long long)remaining(p));
    out->ptr = (const char *)p->base + p->pos;
    out->len = len;
    p->pos += len;
    return VKLLM_OK;
}

/* Reads an array value (after its kv type): element type, count, elements. */
static vkllm_status read_array(parser *p, const char *field, gguf_value *v) {
    uint64_t at = p->pos;
    uint32_t elem_type;
    uint64_t count;
    char sub[160];
    format_field(sub, sizeof sub, "%s element type", field);
    VKL_TRY(read_u32(p, sub, &elem_type));
    if (elem_type == GGUF_TYPE_ARRAY)
        return fail_at(p, VKLLM_ERR_UNSUPPORTED, at,
                       "%s: nested arrays (array of array) are not supported", field);
    if (elem_type != GGUF_TYPE_STRING && gguf_value_type_size(elem_type) == 0)
        return fail_at(p, VKLLM_ERR_FORMAT, at, "%s: unknown array element type %u", field,
                       elem_type);
    format_field(sub, sizeof sub, "%s element count", field);
    uint64_t count_at = p->pos;
    VKL_TRY(read_u64(p, sub, &count));
    v->array.elem_type = (gguf_value_type)elem_type;
    v->array.count = count;
    v->array.data = p->base + p->pos;
    v->array.file_offset = p->pos;
    v->array.strs = NULL;

    if (elem_type != GGUF_TYPE_STRING) {
        uint32_t size = gguf_value_type_size(elem_type);
        if (count > remaining(p) / size)
            return fail_at(p, VKLLM_ERR_FORMAT, count_at,
                           "%s: %llu elements of %s need more than the %llu bytes left in the file",
                           field, (unsigned long long)count, gguf_value_type_name(elem_type),
                           (unsigned long long)remaining(p));
        if (elem_type == GGUF_TYPE_BOOL) {
            for (uint64_t i = 0; i < count; i++) {
                uint8_t b = p->base[p->pos + i];
                if (b > 1)
                    return fail_at(p, VKLLM_ERR_FORMAT, p->pos + i,
                                   "%s: element %llu is bool %u (must be 0 or 1)", field,
                                   (unsigned long long)i, b);
            }
        }
        p->pos += count * size;
        return VKLLM_OK;
    }

    /* Strings: each needs at least its 8-byte length, so bound the count first. */
    if (count > remaining(p) / 8 || count > SIZE_MAX / sizeof(gguf_str))
        return fail_at(p, VKLLM_ERR_FORMAT, count_at,
                       "%s: %llu strings cannot fit in the %llu bytes left in the file", field,
                       (unsigned long long)count, (unsigned long long)remaining(p));
    gguf_str *strs = count ? malloc(count * sizeof *strs) : NULL;
    if (count && !strs)
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: %s: no memory for %llu strings",
                        p->label, field, (unsigned long long)count);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t len;
        uint64_t at = p->pos;
        if (remaining(p) < 8) {
            free(strs);
            return fail_at(p, VKLLM_ERR_FORMAT, at,
                           "truncated file: %s element %llu: string length needs 8 bytes but "
                           "only %llu remain",
                           field, (unsigned long long)i, (unsigned long long)remaining(p));
        }
        len = load_le(p->base + p->pos, 8);
        if (len > remaining(p) - 8) {
            free(strs);
            return fail_at(p, VKLLM_ERR_FORMAT, at,
                           "%s element %llu: string length %llu is longer than the %llu bytes "
                           "left in the file",
                           field, (unsigned long long)i, (unsigned long long)len,
                           (unsigned long long)(remaining(p) - 8));
        }
        strs[i].ptr = (const char *)p->base + p->pos + 8;
        strs[i].len = len;
        p->pos += 8 + len;
    }
    v->array.strs = strs;
    return VKLLM_OK;
}

/* Reads a value of `type` at the cursor into v. */
static vkllm_status read_value(parser *p, uint32_t type, uint64_t type_at, const char *field,
                               gguf_value *v) {
    v->type = (gguf_value_type)type;
    if (type == GGUF_TYPE_STRING) return read_str(p, field, &v->str);
    if (type == GGUF_TYPE_ARRAY) return read_array(p, field, v);
    uint32_t size = gguf_value_type_size(type);
    if (size == 0)
        return fail_at(p, VKLLM_ERR_FORMAT, type_at, "%s: unknown value type %u", field, type);
    VKL_TRY(need(p, size, field));
    const uint8_t *at = p->base + p->pos;
    if (type == GGUF_TYPE_BOOL && *at > 1)
        return fail_at(p, VKLLM_ERR_FORMAT, p->pos, "%s: bool value %u (must be 0 or 1)", field,
                       *at);
    decode_scalar(type, at, v);
    p->pos += size;
    return VKLLM_OK;
}

static vkllm_status parse_kvs(parser *p, gguf_file *f, gguf_index *index) {
    if (f->n_kv > remaining(p) / GGUF_MIN_KV_BYTES)
        return fail_at(p, VKLLM_ERR_FORMAT, 16,
                       "header kv_count %llu is impossible: only %llu bytes follow the header",
                       (unsigned long long)f->n_kv, (unsigned long long)remaining(p));
    f->kv = calloc(f->n_kv ? f->n_kv : 1, sizeof *f->kv);
    if (!f->kv || !name_table_init(&index->kv, f->n_kv))
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory for %llu metadata entries",
                        p->label, (unsigned long long)f->n_kv);
    char field[160], namebuf[80];
    for (uint64_t i = 0; i < f->n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        kv->file_offset = p->pos;
        format_field(field, sizeof field, "kv %llu key", (unsigned long long)i);
        VKL_TRY(read_str(p, field, &kv->key));
        if (kv->key.len == 0)
            return fail_at(p, VKLLM_ERR_FORMAT, kv->file_offset, "kv %llu: empty key",
                           (unsigned long long)i);
        if (kv->key.len > GGUF_MAX_KEY)
            return fail_at(p, VKLLM_ERR_FORMAT, kv->file_offset,
                           "kv %llu: key length %llu exceeds %u", (unsigned long long)i,
                           (unsigned long long)kv->key.len, GGUF_MAX_KEY);
        uint64_t dup = name_table_insert(&index->kv, kv->key, i);
        if (dup)
            return fail_at(p, VKLLM_ERR_FORMAT, kv->file_offset,
                           "kv %llu: duplicate key '%s' (first defined by kv %llu at offset %llu)",
                           (unsigned long long)i, printable(kv->key, namebuf),
                           (unsigned long long)(dup - 1),
                           (unsigned long long)f->kv[dup - 1].file_offset);
        format_field(field, sizeof field, "kv %llu '%s' value", (unsigned long long)i,
                     printable(kv->key, namebuf));
        uint64_t type_at = p->pos;
        uint32_t type;
        VKL_TRY(read_u32(p, field, &type));
        VKL_TRY(read_value(p, type, type_at, field, &kv->value));
    }
    return VKLLM_OK;
}

static vkllm_status read_alignment(parser *p, gguf_file *f, const gguf_index *index) {
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    uint64_t found = name_table_find(&index->kv, "general.alignment");
    if (!found) return VKLLM_OK;
    const gguf_kv *kv = &f->kv[found - 1];
    if (kv->value.type != GGUF_TYPE_UINT32)
        return fail_at(p, VKLLM_ERR_FORMAT, kv->file_offset,
                       "kv 'general.alignment' has type %s (must be uint32)",
                       gguf_value_type_name(kv->value.type));
    uint64_t a = kv->value.u64;
    if (a == 0 || (a & (a - 1)) != 0)
        return fail_at(p, VKLLM_ERR_FORMAT, kv->file_offset,
                       "kv 'general.alignment' = %llu is not a non-zero power of two",
                       (unsigned long long)a);
    f->alignment = (uint32_t)a;
    return VKLLM_OK;
}

/* Rounds x up to a multiple of the power of two `a`; false on overflow. */
static bool align_up(uint64_t x, uint64_t a, uint64_t *out) {
    uint64_t pad = (a - (x & (a - 1))) & (a - 1);
    if (x > UINT64_MAX - pad) return false;
    *out = x + pad;
    return true;
}

/* Reads and checks one tensor info (shape, type, sizes, offset) at the cursor. */
static vkllm_status parse_tensor_info(parser *p, uint64_t i, gguf_tensor *t) {
    char field[160], namebuf[80];
    t->info_offset = p->pos;
    format_field(field, sizeof field, "tensor %llu name", (unsigned long long)i);
    VKL_TRY(read_str(p, field, &t->name));
    const char *name = printable(t->name, namebuf);
    if (t->name.len > GGUF_MAX_TENSOR_NAME)
        return fail_at(p, VKLLM_ERR_FORMAT, t->info_offset,
                       "tensor %llu '%s': name length %llu exceeds %u", (unsigned long long)i, name,
                       (unsigned long long)t->name.len, GGUF_MAX_TENSOR_NAME);
    format_field(field, sizeof field, "tensor %llu '%s' n_dims", (unsigned long long)i, name);
    uint64_t dims_at = p->pos;
    VKL_TRY(read_u32(p, field, &t->n_dims));
    if (t->n_dims > GGUF_MAX_DIMS)
        return fail_at(p, VKLLM_ERR_FORMAT, dims_at, "tensor %llu '%s': n_dims %u exceeds %d",
                       (unsigned long long)i, name, t->n_dims, GGUF_MAX_DIMS);
    t->n_elements = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    bool overflow = false;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        format_field(field, sizeof field, "tensor %llu '%s' ne[%u]", (unsigned long long)i, name,
                     d);
        uint64_t at = p->pos;
        VKL_TRY(read_u64(p, field, &t->ne[d]));
        if (t->ne[d] > (uint64_t)INT64_MAX)
            return fail_at(p, VKLLM_ERR_FORMAT, at, "%s = %llu is negative as int64", field,
                           (unsigned long long)t->ne[d]);
    }
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && t->n_elements > (uint64_t)INT64_MAX / t->ne[d]) overflow = true;
        t->n_elements *= t->ne[d];
    }
    /* A zero dim makes the product 0 even after a partial overflow; still refuse the shape. */
    if (overflow)
        return fail_at(p, VKLLM_ERR_FORMAT, dims_at,
                       "tensor %llu '%s': element count of [%llu, %llu, %llu, %llu] overflows "
                       "int64",
                       (unsigned long long)i, name, (unsigned long long)t->ne[0],
                       (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                       (unsigned long long)t->ne[3]);
    uint64_t type_at = p->pos;
    uint32_t type;
    format_field(field, sizeof field, "tensor %llu '%s' type", (unsigned long long)i, name);
    VKL_TRY(read_u32(p, field, &type));
    ggml_type_info info = ggml_type_get_info(type);
    if (info.block_elems == 0)
        return fail_at(p, VKLLM_ERR_UNSUPPORTED, type_at,
                       "tensor %llu '%s': tensor type %s (%u) is not supported",
                       (unsigned long long)i, name, info.name, type);
    t->type = (ggml_type)type;
    if (t->ne[0] % info.block_elems != 0)
        return fail_at(p, VKLLM_ERR_FORMAT, dims_at,
                       "tensor %llu '%s': ne[0] = %llu is not a multiple of the %s block size %u",
                       (unsigned long long)i, name, (unsigned long long)t->ne[0], info.name,
                       info.block_elems);
    /* A row of ne0 elements is ne0 / block_elems blocks; for 4-byte types ne0 near
     * INT64_MAX would wrap a 64-bit byte count, so check the multiplication too. */
    if (t->ne[0] / info.block_elems > (uint64_t)INT64_MAX / info.block_bytes)
        return fail_at(p, VKLLM_ERR_FORMAT, dims_at,
                       "tensor %llu '%s': row byte size of %s ne[0] = %llu overflows int64",
                       (unsigned long long)i, name, info.name, (unsigned long long)t->ne[0]);
    uint64_t bytes = ggml_row_bytes(type, t->ne[0]);
    for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && bytes > (uint64_t)INT64_MAX / t->ne[d])
            return fail_at(p, VKLLM_ERR_FORMAT, dims_at,
                           "tensor %llu '%s': byte size of %s [%llu, %llu, %llu, %llu] overflows "
                           "int64",
                           (unsigned long long)i, name, info.name, (unsigned long long)t->ne[0],
                           (unsigned long long)t->ne[1], (unsigned long long)t->ne[2],
                           (unsigned long long)t->ne[3]);
        bytes *= t->ne[d];
    }
    t->n_bytes = bytes;
    format_field(field, sizeof field, "tensor %llu '%s' offset", (unsigned long long)i, name);
    VKL_TRY(read_u64(p, field, &t->data_offset)); /* relative until data_start is known */
    return VKLLM_OK;
}

static vkllm_status parse_tensors(parser *p, gguf_file *f, gguf_index *index) {
    if (f->n_tensors > remaining(p) / GGUF_MIN_TENSOR_INFO_BYTES)
        return fail_at(p, VKLLM_ERR_FORMAT, 8,
                       "header tensor_count %llu is impossible: only %llu bytes follow the "
                       "metadata",
                       (unsigned long long)f->n_tensors, (unsigned long long)remaining(p));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof *f->tensors);
    if (!f->tensors || !name_table_init(&index->tensors, f->n_tensors))
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory for %llu tensor infos",
                        p->label, (unsigned long long)f->n_tensors);
    char namebuf[80];
    uint64_t expected_offset = 0; /* llama.cpp: data packed in info order, each aligned */
    bool expected_valid = true;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        VKL_TRY(parse_tensor_info(p, i, t));
        const char *name = printable(t->name, namebuf);
        uint64_t dup = name_table_insert(&index->tensors, t->name, i);
        if (dup)
            return fail_at(p, VKLLM_ERR_FORMAT, t->info_offset,
                           "tensor %llu: duplicate tensor name '%s' (also tensor %llu)",
                           (unsigned long long)i, name, (unsigned long long)(dup - 1));
        if (t->data_offset % f->alignment != 0)
            return fail_at(p, VKLLM_ERR_FORMAT, t->info_offset,
                           "tensor %llu '%s': data offset %llu is not a multiple of the "
                           "alignment %u",
                           (unsigned long long)i, name, (unsigned long long)t->data_offset,
                           f->alignment);
        if (!expected_valid || t->data_offset != expected_offset)
            return fail_at(p, VKLLM_ERR_FORMAT, t->info_offset,
                           "tensor %llu '%s': data offset %llu, expected %llu (tensor data must "
                           "follow info order, each padded to the alignment %u)",
                           (unsigned long long)i, name, (unsigned long long)t->data_offset,
                           (unsigned long long)expected_offset, f->alignment);
        uint64_t padded;
        if (!align_up(t->n_bytes, f->alignment, &padded) || expected_offset > UINT64_MAX - padded)
            expected_valid = false; /* any later tensor then fails the offset check */
        else
            expected_offset += padded;
    }
    return VKLLM_OK;
}

static vkllm_status locate_data(parser *p, gguf_file *f) {
    uint64_t infos_end = p->pos;
    if (!align_up(infos_end, f->alignment, &f->data_start))
        return fail_at(p, VKLLM_ERR_FORMAT, infos_end, "data start overflows when aligned to %u",
                       f->alignment);
    if (f->n_tensors > 0 && f->data_start > f->size)
        return fail_at(p, VKLLM_ERR_FORMAT, infos_end,
                       "truncated file: tensor data should start at %llu but the file has %llu "
                       "bytes",
                       (unsigned long long)f->data_start, (unsigned long long)f->size);
    char namebuf[80];
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        uint64_t rel = t->data_offset;
        bool inside = rel <= f->size - f->data_start && t->n_bytes <= f->size - f->data_start - rel;
        if (!inside) {
            unsigned long long start = f->data_start + rel < f->data_start
                                           ? ~0ull
                                           : (unsigned long long)(f->data_start + rel);
            return fail_at(p, VKLLM_ERR_FORMAT, t->info_offset,
                           "tensor %llu '%s': data [%llu, +%llu bytes) past end of file (size "
                           "%llu)",
                           (unsigned long long)i, printable(t->name, namebuf), start,
                           (unsigned long long)t->n_bytes, (unsigned long long)f->size);
        }
        t->data_offset = f->data_start + rel;
        t->data = f->base + t->data_offset;
    }
    return VKLLM_OK;
}

static vkllm_status parse_header(parser *p, gguf_file *f) {
    VKL_TRY(need(p, 4, "magic"));
    if (memcmp(p->base, GGUF_MAGIC, 4) != 0) {
        const uint8_t *m = p->base;
        return fail_at(p, VKLLM_ERR_FORMAT, 0,
                       "bad magic %02x %02x %02x %02x (expected \"GGUF\": not a GGUF file)", m[0],
                       m[1], m[2], m[3]);
    }
    p->pos = 4;
    VKL_TRY(read_u32(p, "header version", &f->version));
    if (f->version != 0 && (f->version & 0xffffu) == 0)
        return fail_at(p, VKLLM_ERR_UNSUPPORTED, 4,
                       "header version 0x%08x looks byte-swapped: big-endian GGUF files are not "
                       "supported",
                       f->version);
    if (f->version == 0) return fail_at(p, VKLLM_ERR_FORMAT, 4, "header version 0 is invalid");
    if (f->version == 1)
        return fail_at(p, VKLLM_ERR_UNSUPPORTED, 4,
                       "header version 1 (32-bit counts) is not supported; only 2 and 3 are");
    if (f->version > 3)
        return fail_at(p, VKLLM_ERR_UNSUPPORTED, 4,
                       "header version %u is newer than supported (only 2 and 3)", f->version);
    VKL_TRY(read_u64(p, "header tensor_count", &f->n_tensors));
    VKL_TRY(read_u64(p, "header kv_count", &f->n_kv));
    return VKLLM_OK;
}

static void free_file(gguf_file *f) {
    if (!f) return;
    if (f->kv)
        for (uint64_t i = 0; i < f->n_kv; i++)
            if (f->kv[i].value.type == GGUF_TYPE_ARRAY) free((void *)f->kv[i].value.array.strs);
    free(f->kv);
    free(f->tensors);
    gguf_index *index = f->index;
    if (index) {
        free(index->kv.slots);
        free(index->tensors.slots);
        free(index);
    }
    if (f->owns_mapping && f->base && f->size) munmap((void *)f->base, f->size);
    free(f->path);
    free(f);
}

static vkllm_status parse_all(gguf_file *f) {
    parser p = {f->base, f->size, 0, f->path};
    gguf_index *index = calloc(1, sizeof *index);
    if (!index) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory", f->path);
    f->index = index;
    VKL_TRY(parse_header(&p, f));
    VKL_TRY(parse_kvs(&p, f, index));
    VKL_TRY(read_alignment(&p, f, index));
    VKL_TRY(parse_tensors(&p, f, index));
    return locate_data(&p, f);
}

/* Takes ownership of nothing; on failure frees f (and its mapping if owned). */
static vkllm_status finish_open(gguf_file *f, gguf_file **out) {
    vkllm_status st = parse_all(f);
    if (st != VKLLM_OK) {
        /* kv entries past the failure point were never filled: calloc left them zero. */
        free_file(f);
        return st;
    }
    *out = f;
    return VKLLM_OK;
}

static gguf_file *new_file(const char *label) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->path = strdup(label ? label : "(memory)");
    if (!f->path) {
        free(f);
        return NULL;
    }
    return f;
}

vkllm_status gguf_open_memory(const void *data, uint64_t size, const char *label, gguf_file **out) {
    if (!out || (!data && size))
        return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_open_memory: null argument");
    *out = NULL;
    gguf_file *f = new_file(label);
    if (!f) return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "gguf_open_memory: no memory");
    static const uint8_t empty[1];
    f->base = data ? data : empty;
    f->size = size;
    f->owns_mapping = false;
    return finish_open(f, out);
}

vkllm_status gguf_open(const char *path, gguf_file **out) {
    if (!path || !out) return vkl_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_open: null argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vkl_fail(VKLLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return vkl_fail(VKLLM_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vkl_fail(VKLLM_ERR_IO, "%s: not a regular file", path);
    }
    gguf_file *f = new_file(path);
    if (!f) {
        close(fd);
        return vkl_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: no memory", path);
    }
    f->size = (uint64_t)st.st_size;
    if (f->size == 0) {
        static const uint8_t empty[1];
        f->base = empty; /* mmap refuses length 0; the parser reports the truncation */
    } else {
        void *map = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            free_file(f);
            return vkl_fail(VKLLM_ERR_IO, "%s: cannot map %llu bytes: %s", path,
                            (unsigned long long)st.st_size, strerror(e));
        }
        f->base = map;
        f->owns_mapping = true;
    }
    close(fd); /* the mapping stays valid */
    return finish_open(f, out);
}

void gguf_close(gguf_file *file) {
    free_file(file);
}

/* ------------------------------------------------------------------ lookups */

const gguf_kv *gguf_find_kv(const gguf_file *file, const char *key) {
    if (!file || !file->index) return NULL;
    const gguf_index *index = file->index;
    uint64_t found = name_table_find(&index->kv, key);
    return found ? &file->kv[found - 1] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *file, const char *name) {
    if (!file || !file->index) return NULL;
    const gguf_index *index = file->index;
    uint64_t found = name_table_find(&index->tensors, name);
    return found ? &file->tensors[found - 1] : NULL;
}

static vkllm_status find_for_get(const gguf_file *file, const char *key, const gguf_kv **out) {
    *out = gguf_find_kv(file, key);
    if (!*out)
        return vkl_fail(VKLLM_ERR_NOT_FOUND, "%s: key '%s' not found", file ? file->path : "(null)",
                        key ? key : "(null)");
    return VKLLM_OK;
}

static vkllm_status type_mismatch(const gguf_file *file, const gguf_kv *kv, const char *key,
                                  const char *wanted) {
    return vkl_fail(VKLLM_ERR_FORMAT, "%s: key '%s' has type %s, expected %s (at offset %llu)",
                    file->path, key, gguf_value_type_name(kv->value.type), wanted,
                    (unsigned long long)kv->file_offset);
}

/* Reads an integer key of any integer type into (negative, magnitude) form and checks
 * it lies within [lo, hi]. */
static vkllm_status get_int_in_range(const gguf_file *file, const char *key, int64_t lo,
                                     uint64_t hi, const char *wanted, bool *negative,
                                     uint64_t *magnitude) {
    const gguf_kv *kv;
    VKL_TRY(find_for_get(file, key, &kv));
    uint32_t t = kv->value.type;
    if (is_unsigned_int(t)) {
        *negative = false;
        *magnitude = kv->value.u64;
    } else if (is_signed_int(t)) {
        int64_t v = kv->value.i64;
        *negative = v < 0;
        *magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    } else {
        return type_mismatch(file, kv, key, wanted);
    }
    bool ok = *negative ? (lo < 0 && *magnitude <= (uint64_t)0 - (uint64_t)lo) : *magnitude <= hi;
    if (!ok)
        return vkl_fail(VKLLM_ERR_FORMAT, "%s: key '%s' = %s%llu does not fit %s (at offset %llu)",
                        file->path, key, *negative ? "-" : "", (unsigned long long)*magnitude,
                        wanted, (unsigned long long)kv->file_offset);
    return VKLLM_OK;
}

vkllm_status gguf_get_u32(const gguf_file *file, const char *key, uint32_t *out) {
    bool neg = false;
    uint64_t mag = 0;
    VKL_TRY(get_int_in_range(file, key, 0, UINT32_MAX, "uint32", &neg, &mag));
    *out = (uint32_t)mag;
    return VKLLM_OK;
}

vkllm_status gguf_get_u64(const gguf_file *file, const char *key, uint64_t *out) {
    bool neg = false;
    uint64_t mag = 0;
    VKL_TRY(get_int_in_range(file, key, 0, UINT64_MAX, "uint64", &neg, &mag));
    *out = mag;
    return VKLLM_OK;
}

vkllm_status gguf_get_i32(const gguf_file *file, const char *key, int32_t *out) {
    bool neg = false;
    uint64_t mag = 0;
    VKL_TRY(get_int_in_range(file, key, INT32_MIN, INT32_MAX, "int32", &neg, &mag));
    *out = neg ? (int32_t)(-(int64_t)mag) : (int32_t)mag;
    return VKLLM_OK;
}

vkllm_status gguf_get_i64(const gguf_file *file, const char *key, int64_t *out) {
    bool neg = false;
    uint64_t mag = 0;
    VKL_TRY(get_int_in_range(file, key, INT64_MIN, INT64_MAX, "int64", &neg, &mag));
    /* mag <= 2^63 when negative: compute in unsigned to avoid overflow on INT64_MIN. */
    *out = neg ? (int64_t)(0 - mag) : (int64_t)mag;
    return VKLLM_OK;
}

vkllm_status gguf_get_f32(const gguf_file *file, const char *key, float *out) {
    const gguf_kv *kv;
    VKL_TRY(find_for_get(file, key, &kv));
    uint32_t t = kv->value.type;
    if (t == GGUF_TYPE_FLOAT32 || t == GGUF_TYPE_FLOAT64)
        *out = (float)kv->value.f64;
    else if (is_unsigned_int(t))
        *out = (float)kv->value.u64;
    else if (is_signed_int(t))
        *out = (float)kv->value.i64;
    else
        return type_mismatch(file, kv, key, "float32 or float64");
    return VKLLM_OK;
}

vkllm_status gguf_get_bool(const gguf_file *file, const char *key, bool *out) {
    const gguf_kv *kv;
    VKL_TRY(find_for_get(file, key, &kv));
    if (kv->value.type != GGUF_TYPE_BOOL) return type_mismatch(file, kv, key, "bool");
    *out = kv->value.u64 != 0;
    return VKLLM_OK;
}

vkllm_status gguf_get_str(const gguf_file *file, const char *key, gguf_str *out) {
    const gguf_kv *kv;
    VKL_TRY(find_for_get(file, key, &kv));
    if (kv->value.type != GGUF_TYPE_STRING) return type_mismatch(file, kv, key, "string");
    *out = kv->value.str;
    return VKLLM_OK;
}

vkllm_status gguf_get_array(const gguf_file *file, const char *key, gguf_value_type *elem_type,
                            uint64_t *count) {
    const gguf_kv *kv;
    VKL_TRY(find_for_get(file, key, &kv));
    if (kv->value.type != GGUF_TYPE_ARRAY) return type_mismatch(file, kv, key, "array");
    if (elem_type) *elem_type = kv->value.array.elem_type;
    if (count) *count = kv->value.array.count;
    return VKLLM_OK;
}

/* ------------------------------------------------------------------ array elements */

gguf_str gguf_array_str(const gguf_kv *kv, uint64_t index) {
    gguf_str empty = {"", 0};
    if (!kv || kv->value.type != GGUF_TYPE_ARRAY || kv->value.array.elem_type != GGUF_TYPE_STRING ||
        index >= kv->value.array.count)
        return empty;
    return kv->value.array.strs[index];
}

/* Decodes element `index` of a numeric array; false when out of range or not numeric. */
static bool array_elem(const gguf_kv *kv, uint64_t index, gguf_value *v) {
    if (!kv || kv->value.type != GGUF_TYPE_ARRAY || index >= kv->value.array.count) return false;
    uint32_t t = kv->value.array.elem_type;
    uint32_t size = gguf_value_type_size(t);
    if (size == 0) return false;
    v->type = (gguf_value_type)t;
    decode_scalar(t, kv->value.array.data + index * size, v);
    return true;
}

int64_t gguf_array_int(const gguf_kv *kv, uint64_t index) {
    gguf_value v;
    if (!array_elem(kv, index, &v)) return 0;
    if (is_signed_int(v.type)) return v.i64;
    if (is_unsigned_int(v.type) || v.type == GGUF_TYPE_BOOL) return (int64_t)v.u64;
    return 0; /* floats are not integers */
}

double gguf_array_float(const gguf_kv *kv, uint64_t index) {
    gguf_value v;
    if (!array_elem(kv, index, &v)) return 0.0;
    if (v.type == GGUF_TYPE_FLOAT32 || v.type == GGUF_TYPE_FLOAT64) return v.f64;
    if (is_signed_int(v.type)) return (double)v.i64;
    return (double)v.u64;
}

bool gguf_str_eq(gguf_str s, const char *c) {
    if (!c) return false;
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}
