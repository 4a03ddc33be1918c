/* test_gguf.c: the GGUF writer and reader against each other, against the Python gguf
 * package (via a committed file + summary), and the reader on the real default model.
 *
 * - writer_roundtrip: a file with every metadata type (scalars, numeric/bool/string
 *   arrays, empty ones) and tensors of several types (pointer- and callback-filled),
 *   written to memory and to disk; both images are identical and read back exactly.
 * - python_summary: tests/fixtures/gguf/valid_all_types.gguf was written by this test
 *   and summarized by gguf-py's GGUFReader (tools/fixtures/gen_gguf_fixtures.py); our
 *   reader must produce the same summary text, and the writer the same bytes.
 * - getters, writer refusals, lookups, the real model's shapes and types. */
// links: model common
#include <criterion/criterion.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_write.h"
#include "common/test_util.h"

#define SAMPLE_SEED 20240611u
#define FIXTURE_DIR VKLLM_SOURCE_DIR "/tests/fixtures/gguf"
#define MODEL_PATH VKLLM_SOURCE_DIR "/models/gemma-3-270m-q4_k_m.gguf"

/* ------------------------------------------------------------------ sample file */

typedef struct sample_tensor {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[4];
    ggml_type type;
    bool use_fill;
    uint8_t *bytes;
    uint64_t n_bytes;
} sample_tensor;

static sample_tensor sample_tensors[] = {
    {"a.f32", 2, {3, 5}, GGML_TYPE_F32, false, NULL, 0},
    {"b.f16", 1, {7}, GGML_TYPE_F16, true, NULL, 0},
    {"c.q4_0", 2, {64, 3}, GGML_TYPE_Q4_0, false, NULL, 0},
    {"d.q8_0", 3, {32, 2, 2}, GGML_TYPE_Q8_0, true, NULL, 0},
    {"e.q4_k", 2, {256, 2}, GGML_TYPE_Q4_K, false, NULL, 0},
    {"f.q6_k", 4, {256, 1, 1, 2}, GGML_TYPE_Q6_K, false, NULL, 0},
    {"g.bf16", 2, {5, 3}, GGML_TYPE_BF16, true, NULL, 0},
    {"h.i32", 1, {9}, GGML_TYPE_I32, false, NULL, 0},
    {"i.q5_0", 2, {32, 1}, GGML_TYPE_Q5_0, false, NULL, 0},
};
#define N_SAMPLE_TENSORS (sizeof sample_tensors / sizeof sample_tensors[0])

static const char *const sample_strings[] = {"alpha", "", "γειά", "with space", "x\ty"};
static const uint8_t sample_u8s[] = {0, 1, 255};
static const int8_t sample_i8s[] = {-128, 0, 127};
static const uint16_t sample_u16s[] = {0, 65535, 1234};
static const int16_t sample_i16s[] = {-32768, 32767, -1};
static const uint32_t sample_u32s[] = {0, 4294967295u, 42};
static const int32_t sample_i32s[] = {INT32_MIN, INT32_MAX, -7};
static const float sample_f32s[] = {1.5f, -0.0f, 3.4028235e38f, 1e-45f};
static const uint8_t sample_bools[] = {1, 0, 1, 1};
static const uint64_t sample_u64s[] = {0, UINT64_MAX, 1ull << 40};
static const int64_t sample_i64s[] = {INT64_MIN, INT64_MAX, -3};
static const double sample_f64s[] = {3.141592653589793, -1e300, 5e-324};

static vkllm_status fill_from_sample(void *user, const gguf_writer_tensor_desc *desc,
                                     uint8_t *dst) {
    const sample_tensor *t = user;
    cr_assert_eq(desc->n_bytes, t->n_bytes, "fill for %s asked %llu bytes", desc->name,
                 (unsigned long long)desc->n_bytes);
    memcpy(dst, t->bytes, t->n_bytes);
    return VKLLM_OK;
}

static void make_sample_bytes(void) {
    test_rng rng = test_rng_seeded(SAMPLE_SEED);
    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        sample_tensor *t = &sample_tensors[i];
        t->n_bytes = ggml_row_bytes(t->type, t->ne[0]);
        for (uint32_t d = 1; d < t->n_dims; d++)
            t->n_bytes *= t->ne[d];
        free(t->bytes);
        t->bytes = malloc(t->n_bytes);
        for (uint64_t b = 0; b < t->n_bytes; b++)
            t->bytes[b] = (uint8_t)test_rng_next(&rng);
    }
}

/* The writer for the sample file; deterministic so the committed fixture matches. */
static gguf_writer *build_sample(void) {
    make_sample_bytes();
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
#define OK(call) cr_assert_eq((call), VKLLM_OK, "%s: %s", #call, vkllm_last_error())
    OK(gguf_writer_add_str(w, "general.architecture", "testarch"));
    OK(gguf_writer_set_alignment(w, 64));
    OK(gguf_writer_add_u8(w, "t.u8", 200));
    OK(gguf_writer_add_i8(w, "t.i8", -100));
    OK(gguf_writer_add_u16(w, "t.u16", 60000));
    OK(gguf_writer_add_i16(w, "t.i16", -30000));
    OK(gguf_writer_add_u32(w, "t.u32", 4000000000u));
    OK(gguf_writer_add_i32(w, "t.i32", -2000000000));
    OK(gguf_writer_add_f32(w, "t.f32", 0.1f));
    OK(gguf_writer_add_bool(w, "t.bool", true));
    OK(gguf_writer_add_str(w, "t.str", "hello gguf"));
    OK(gguf_writer_add_str_n(w, "t.str_nul", "a\0b", 3));
    OK(gguf_writer_add_u64(w, "t.u64", 18000000000000000000ull));
    OK(gguf_writer_add_i64(w, "t.i64", -9000000000000000000ll));
    OK(gguf_writer_add_f64(w, "t.f64", 2.718281828459045));
    OK(gguf_writer_add_array(w, "a.u8", GGUF_TYPE_UINT8, sample_u8s, 3));
    OK(gguf_writer_add_array(w, "a.i8", GGUF_TYPE_INT8, sample_i8s, 3));
    OK(gguf_writer_add_array(w, "a.u16", GGUF_TYPE_UINT16, sample_u16s, 3));
    OK(gguf_writer_add_array(w, "a.i16", GGUF_TYPE_INT16, sample_i16s, 3));
    OK(gguf_writer_add_array(w, "a.u32", GGUF_TYPE_UINT32, sample_u32s, 3));
    OK(gguf_writer_add_array(w, "a.i32", GGUF_TYPE_INT32, sample_i32s, 3));
    OK(gguf_writer_add_array(w, "a.f32", GGUF_TYPE_FLOAT32, sample_f32s, 4));
    OK(gguf_writer_add_array(w, "a.bool", GGUF_TYPE_BOOL, sample_bools, 4));
    OK(gguf_writer_add_array(w, "a.u64", GGUF_TYPE_UINT64, sample_u64s, 3));
    OK(gguf_writer_add_array(w, "a.i64", GGUF_TYPE_INT64, sample_i64s, 3));
    OK(gguf_writer_add_array(w, "a.f64", GGUF_TYPE_FLOAT64, sample_f64s, 3));
    OK(gguf_writer_add_str_array(w, "a.str", sample_strings, 5));
    OK(gguf_writer_add_array(w, "a.empty", GGUF_TYPE_INT32, NULL, 0));
    OK(gguf_writer_add_str_array(w, "a.empty_str", NULL, 0));
    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        sample_tensor *t = &sample_tensors[i];
        if (t->use_fill)
            OK(gguf_writer_add_tensor_fill(w, t->name, t->n_dims, t->ne, t->type, fill_from_sample,
                                           t));
        else
            OK(gguf_writer_add_tensor(w, t->name, t->n_dims, t->ne, t->type, t->bytes));
    }
#undef OK
    return w;
}

static void free_sample_bytes(void) {
    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        free(sample_tensors[i].bytes);
        sample_tensors[i].bytes = NULL;
    }
}

static const gguf_kv *must_find(const gguf_file *f, const char *key, gguf_value_type type) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    cr_assert(kv, "key %s missing", key);
    cr_assert_eq(kv->value.type, type, "key %s type %d", key, kv->value.type);
    return kv;
}

static void check_sample(const gguf_file *f) {
    cr_assert_eq(f->version, 3);
    cr_assert_eq(f->alignment, 64);
    cr_assert_eq(f->n_kv, 29);
    cr_assert_eq(f->n_tensors, N_SAMPLE_TENSORS);
    cr_assert_eq(f->data_start % 64, 0);
    gguf_str s;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &s), VKLLM_OK);
    cr_assert(gguf_str_eq(s, "testarch"));
    cr_assert_eq(must_find(f, "t.u8", GGUF_TYPE_UINT8)->value.u64, 200);
    cr_assert_eq(must_find(f, "t.i8", GGUF_TYPE_INT8)->value.i64, -100);
    cr_assert_eq(must_find(f, "t.u16", GGUF_TYPE_UINT16)->value.u64, 60000);
    cr_assert_eq(must_find(f, "t.i16", GGUF_TYPE_INT16)->value.i64, -30000);
    cr_assert_eq(must_find(f, "t.u32", GGUF_TYPE_UINT32)->value.u64, 4000000000u);
    cr_assert_eq(must_find(f, "t.i32", GGUF_TYPE_INT32)->value.i64, -2000000000);
    cr_assert_eq(must_find(f, "t.f32", GGUF_TYPE_FLOAT32)->value.f64, (double)0.1f);
    cr_assert_eq(must_find(f, "t.bool", GGUF_TYPE_BOOL)->value.u64, 1);
    cr_assert(gguf_str_eq(must_find(f, "t.str", GGUF_TYPE_STRING)->value.str, "hello gguf"));
    gguf_str nul = must_find(f, "t.str_nul", GGUF_TYPE_STRING)->value.str;
    cr_assert(nul.len == 3 && !memcmp(nul.ptr, "a\0b", 3));
    cr_assert_eq(must_find(f, "t.u64", GGUF_TYPE_UINT64)->value.u64, 18000000000000000000ull);
    cr_assert_eq(must_find(f, "t.i64", GGUF_TYPE_INT64)->value.i64, -9000000000000000000ll);
    cr_assert_eq(must_find(f, "t.f64", GGUF_TYPE_FLOAT64)->value.f64, 2.718281828459045);

    struct {
        const char *key;
        gguf_value_type type;
        uint64_t count;
    } arrays[] = {{"a.u8", GGUF_TYPE_UINT8, 3},    {"a.i8", GGUF_TYPE_INT8, 3},
                  {"a.u16", GGUF_TYPE_UINT16, 3},  {"a.i16", GGUF_TYPE_INT16, 3},
                  {"a.u32", GGUF_TYPE_UINT32, 3},  {"a.i32", GGUF_TYPE_INT32, 3},
                  {"a.f32", GGUF_TYPE_FLOAT32, 4}, {"a.bool", GGUF_TYPE_BOOL, 4},
                  {"a.u64", GGUF_TYPE_UINT64, 3},  {"a.i64", GGUF_TYPE_INT64, 3},
                  {"a.f64", GGUF_TYPE_FLOAT64, 3}, {"a.str", GGUF_TYPE_STRING, 5},
                  {"a.empty", GGUF_TYPE_INT32, 0}, {"a.empty_str", GGUF_TYPE_STRING, 0}};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) {
        gguf_value_type et;
        uint64_t count;
        cr_assert_eq(gguf_get_array(f, arrays[i].key, &et, &count), VKLLM_OK, "%s", arrays[i].key);
        cr_assert_eq(et, arrays[i].type, "%s elem type", arrays[i].key);
        cr_assert_eq(count, arrays[i].count, "%s count", arrays[i].key);
    }
    const gguf_kv *kv;
    kv = gguf_find_kv(f, "a.u8");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_u8s[i]);
    kv = gguf_find_kv(f, "a.i8");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_i8s[i]);
    kv = gguf_find_kv(f, "a.u16");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_u16s[i]);
    kv = gguf_find_kv(f, "a.i16");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_i16s[i]);
    kv = gguf_find_kv(f, "a.u32");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_u32s[i]);
    kv = gguf_find_kv(f, "a.i32");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_i32s[i]);
    kv = gguf_find_kv(f, "a.f32");
    for (int i = 0; i < 4; i++) {
        double v = gguf_array_float(kv, i);
        cr_assert(!memcmp(&(float){(float)v}, &sample_f32s[i], 4), "a.f32[%d] = %g", i, v);
    }
    kv = gguf_find_kv(f, "a.bool");
    for (int i = 0; i < 4; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_bools[i]);
    kv = gguf_find_kv(f, "a.u64");
    for (int i = 0; i < 3; i++)
        cr_assert_eq((uint64_t)gguf_array_int(kv, i), sample_u64s[i]);
    kv = gguf_find_kv(f, "a.i64");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_int(kv, i), sample_i64s[i]);
    kv = gguf_find_kv(f, "a.f64");
    for (int i = 0; i < 3; i++)
        cr_assert_eq(gguf_array_float(kv, i), sample_f64s[i]);
    kv = gguf_find_kv(f, "a.str");
    for (int i = 0; i < 5; i++)
        cr_assert(gguf_str_eq(gguf_array_str(kv, i), sample_strings[i]), "a.str[%d]", i);
    /* Out-of-range and wrong-kind accesses give empty/zero values. */
    cr_assert_eq(gguf_array_str(kv, 5).len, 0);
    cr_assert_eq(gguf_array_int(kv, 0), 0);
    cr_assert_eq(gguf_array_int(gguf_find_kv(f, "a.i32"), 3), 0);
    cr_assert_eq(gguf_array_float(gguf_find_kv(f, "a.f64"), 99), 0.0);
    cr_assert_eq(gguf_array_str(gguf_find_kv(f, "a.empty_str"), 0).len, 0);
    cr_assert_eq(gguf_array_int(gguf_find_kv(f, "t.u8"), 0), 0);

    uint64_t expected_offset = f->data_start;
    for (size_t i = 0; i < N_SAMPLE_TENSORS; i++) {
        const sample_tensor *st = &sample_tensors[i];
        const gguf_tensor *t = gguf_find_tensor(f, st->name);
        cr_assert(t, "tensor %s missing", st->name);
        cr_assert_eq(t, &f->tensors[i], "tensor %s out of order", st->name);
        cr_assert(gguf_str_eq(t->name, st->name));
        cr_assert_eq(t->n_dims, st->n_dims);
        cr_assert_eq(t->type, st->type);
        uint64_t n = 1;
        for (uint32_t d = 0; d < 4; d++) {
            uint64_t want = d < st->n_dims ? st->ne[d] : 1;
            cr_assert_eq(t->ne[d], want, "%s ne[%u]", st->name, d);
            n *= want;
        }
        cr_assert_eq(t->n_elements, n);
        cr_assert_eq(t->n_bytes, st->n_bytes, "%s n_bytes", st->name);
        cr_assert_eq(t->data_offset, expected_offset, "%s offset", st->name);
        cr_assert_eq(t->data, f->base + t->data_offset);
        cr_assert(!memcmp(t->data, st->bytes, st->n_bytes), "%s data differs", st->name);
        expected_offset += (st->n_bytes + 63) / 64 * 64;
    }
    cr_assert_eq(f->size, expected_offset, "file ends after the last padded tensor");
    cr_assert_null(gguf_find_tensor(f, "nope"));
    cr_assert_null(gguf_find_kv(f, "nope"));
    cr_assert_null(gguf_find_kv(f, "t.u"), "prefix of a key is not the key");
}

Test(gguf, writer_roundtrip_memory_and_file) {
    gguf_writer *w = build_sample();
    void *mem;
    uint64_t size;
    cr_assert_eq(gguf_writer_write_memory(w, &mem, &size), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(size, gguf_writer_file_size(w));
    char path[] = VKLLM_BINARY_DIR "/test_gguf_roundtrip.gguf";
    cr_assert_eq(gguf_writer_write_file(w, path), VKLLM_OK, "%s", vkllm_last_error());

    gguf_file *f;
    cr_assert_eq(gguf_open_memory(mem, size, "roundtrip", &f), VKLLM_OK, "%s", vkllm_last_error());
    check_sample(f);
    gguf_close(f);

    cr_assert_eq(gguf_open(path, &f), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(f->size, size);
    cr_assert(!memcmp(f->base, mem, size), "file and memory images differ");
    check_sample(f);
    gguf_close(f);
    remove(path);
    free(mem);
    gguf_writer_destroy(w);
    free_sample_bytes();
}

/* ------------------------------------------------------------------ gguf-py cross-check */

static void appendf(char **buf, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    va_list copy;
    va_copy(copy, args);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (*len + (size_t)n + 1 > *cap) {
        *cap = (*len + (size_t)n + 1) * 2;
        *buf = realloc(*buf, *cap);
    }
    vsnprintf(*buf + *len, *cap - *len, fmt, args);
    *len += (size_t)n;
    va_end(args);
}

static void append_hex(char **buf, size_t *len, size_t *cap, const char *p, uint64_t n) {
    appendf(buf, len, cap, "%s", n ? "" : "-");
    for (uint64_t i = 0; i < n; i++)
        appendf(buf, len, cap, "%02x", (uint8_t)p[i]);
}

static uint64_t fnv1a(const uint8_t *p, uint64_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void append_scalar(char **b, size_t *l, size_t *c, gguf_value_type t, gguf_value v) {
    switch (t) {
    case GGUF_TYPE_INT8:
    case GGUF_TYPE_INT16:
    case GGUF_TYPE_INT32:
    case GGUF_TYPE_INT64:
        appendf(b, l, c, " %lld", (long long)v.i64);
        break;
    case GGUF_TYPE_FLOAT32:
        appendf(b, l, c, " %.9g", v.f64);
        break;
    case GGUF_TYPE_FLOAT64:
        appendf(b, l, c, " %.17g", v.f64);
        break;
    case GGUF_TYPE_STRING:
        appendf(b, l, c, " ");
        append_hex(b, l, c, v.str.ptr, v.str.len);
        break;
    default:
        appendf(b, l, c, " %llu", (unsigned long long)v.u64);
        break;
    }
}

/* One line per kv and per tensor, in file order; the same format as
 * tools/fixtures/gen_gguf_fixtures.py prints from gguf-py's GGUFReader. */
static char *summarize(const gguf_file *f) {
    char *b = NULL;
    size_t l = 0, c = 0;
    appendf(&b, &l, &c, "version %u tensors %llu kvs %llu\n", f->version,
            (unsigned long long)f->n_tensors, (unsigned long long)f->n_kv);
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        appendf(&b, &l, &c, "kv %.*s %s", (int)kv->key.len, kv->key.ptr,
                gguf_value_type_name(kv->value.type));
        if (kv->value.type == GGUF_TYPE_ARRAY) {
            gguf_value_type et = kv->value.array.elem_type;
            appendf(&b, &l, &c, " %s %llu", gguf_value_type_name(et),
                    (unsigned long long)kv->value.array.count);
            for (uint64_t j = 0; j < kv->value.array.count; j++) {
                gguf_value v;
                if (et == GGUF_TYPE_STRING) {
                    v.str = gguf_array_str(kv, j);
                } else if (et == GGUF_TYPE_FLOAT32 || et == GGUF_TYPE_FLOAT64) {
                    v.f64 = gguf_array_float(kv, j);
                } else {
                    v.i64 = gguf_array_int(kv, j);
                }
                append_scalar(&b, &l, &c, et, v);
            }
        } else {
            append_scalar(&b, &l, &c, kv->value.type, kv->value);
        }
        appendf(&b, &l, &c, "\n");
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        appendf(&b, &l, &c, "tensor %.*s %s", (int)t->name.len, t->name.ptr,
                ggml_type_get_info(t->type).name);
        for (uint32_t d = 0; d < t->n_dims; d++)
            appendf(&b, &l, &c, "%s%llu", d ? "," : " ", (unsigned long long)t->ne[d]);
        appendf(&b, &l, &c, " offset %llu bytes %llu fnv %016llx\n",
                (unsigned long long)t->data_offset, (unsigned long long)t->n_bytes,
                (unsigned long long)fnv1a(t->data, t->n_bytes));
    }
    return b;
}

static char *read_text(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, fp);
    s[got] = '\0';
    fclose(fp);
    return s;
}

Test(gguf, python_summary_matches) {
    const char *fixture = FIXTURE_DIR "/valid_all_types.gguf";
    char *expected = read_text(FIXTURE_DIR "/valid_all_types.summary.txt");
    cr_assert(expected, "missing fixture %s (run tools/fixtures/gen_gguf_fixtures.py)",
              FIXTURE_DIR "/valid_all_types.summary.txt");

    /* The committed file is exactly what the writer produces today. */
    gguf_writer *w = build_sample();
    void *mem;
    uint64_t size;
    cr_assert_eq(gguf_writer_write_memory(w, &mem, &size), VKLLM_OK, "%s", vkllm_last_error());
    gguf_file *f;
    cr_assert_eq(gguf_open(fixture, &f), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert(f->size == size && !memcmp(f->base, mem, size),
              "writer output differs from %s (regenerate: test_gguf --write-fixture)", fixture);
    char *ours = summarize(f);
    cr_assert_str_eq(ours, expected, "our reader's summary differs from gguf-py's");
    free(ours);
    free(expected);
    gguf_close(f);
    free(mem);
    gguf_writer_destroy(w);
    free_sample_bytes();
}

/* A file written by gguf-py's GGUFWriter reads back as gguf-py's reader sees it. */
Test(gguf, reads_gguf_py_written_file) {
    char *expected = read_text(FIXTURE_DIR "/valid_gguf_py.summary.txt");
    cr_assert(expected, "missing fixture valid_gguf_py.summary.txt");
    gguf_file *f;
    cr_assert_eq(gguf_open(FIXTURE_DIR "/valid_gguf_py.gguf", &f), VKLLM_OK, "%s",
                 vkllm_last_error());
    char *ours = summarize(f);
    cr_assert_str_eq(ours, expected, "our reader's summary differs from gguf-py's");
    uint32_t u32;
    cr_assert_eq(gguf_get_u32(f, "p.u32", &u32), VKLLM_OK);
    cr_assert_eq(u32, 3000000000u);
    free(ours);
    free(expected);
    gguf_close(f);
}

/* Regenerates the committed sample when VKLLM_WRITE_GGUF_FIXTURE=1 (then run
 * tools/fixtures/gen_gguf_fixtures.py to refresh its summary). */
Test(gguf, write_fixture_on_request) {
    const char *flag = getenv("VKLLM_WRITE_GGUF_FIXTURE");
    if (!flag || strcmp(flag, "1") != 0) cr_skip_test("set VKLLM_WRITE_GGUF_FIXTURE=1");
    gguf_writer *w = build_sample();
    cr_assert_eq(gguf_writer_write_file(w, FIXTURE_DIR "/valid_all_types.gguf"), VKLLM_OK, "%s",
                 vkllm_last_error());
    gguf_writer_destroy(w);
    free_sample_bytes();
}

/* ------------------------------------------------------------------ getters */

static gguf_file *open_written(gguf_writer *w, void **mem) {
    uint64_t size;
    cr_assert_eq(gguf_writer_write_memory(w, mem, &size), VKLLM_OK, "%s", vkllm_last_error());
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(*mem, size, "getters.gguf", &f), VKLLM_OK, "%s",
                 vkllm_last_error());
    return f;
}

Test(gguf, typed_getters_convert_and_range_check) {
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_u8(w, "k.u8", 7), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_i32(w, "k.i32", 1234), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_i32(w, "k.neg", -5), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_u64(w, "k.big", 1ull << 33), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_i64(w, "k.min", INT64_MIN), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_f64(w, "k.f64", 0.25), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_bool(w, "k.bool", false), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_str(w, "k.str", "s"), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_array(w, "k.arr", GGUF_TYPE_UINT32, (uint32_t[]){1, 2}, 2),
                 VKLLM_OK);
    void *mem;
    gguf_file *f = open_written(w, &mem);

    uint32_t u32;
    uint64_t u64;
    int32_t i32;
    int64_t i64;
    float f32;
    bool b;
    gguf_str s;
    cr_assert_eq(gguf_get_u32(f, "k.u8", &u32), VKLLM_OK);
    cr_assert_eq(u32, 7);
    cr_assert_eq(gguf_get_u32(f, "k.i32", &u32), VKLLM_OK);
    cr_assert_eq(u32, 1234);
    cr_assert_eq(gguf_get_u64(f, "k.big", &u64), VKLLM_OK);
    cr_assert_eq(u64, 1ull << 33);
    cr_assert_eq(gguf_get_i32(f, "k.neg", &i32), VKLLM_OK);
    cr_assert_eq(i32, -5);
    cr_assert_eq(gguf_get_i64(f, "k.min", &i64), VKLLM_OK);
    cr_assert_eq(i64, INT64_MIN);
    cr_assert_eq(gguf_get_f32(f, "k.f64", &f32), VKLLM_OK);
    cr_assert_eq(f32, 0.25f);
    cr_assert_eq(gguf_get_f32(f, "k.i32", &f32), VKLLM_OK);
    cr_assert_eq(f32, 1234.0f);
    cr_assert_eq(gguf_get_bool(f, "k.bool", &b), VKLLM_OK);
    cr_assert_eq(b, false);
    cr_assert_eq(gguf_get_str(f, "k.str", &s), VKLLM_OK);
    cr_assert(gguf_str_eq(s, "s"));

    /* Range and type failures name the key. */
    cr_assert_eq(gguf_get_u32(f, "k.big", &u32), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "k.big"), "%s", vkllm_last_error());
    cr_assert(strstr(vkllm_last_error(), "uint32"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_get_u32(f, "k.neg", &u32), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "-5"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_get_u64(f, "k.min", &u64), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_i32(f, "k.big", &i32), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_i32(f, "k.min", &i32), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_u32(f, "k.str", &u32), VKLLM_ERR_FORMAT);
    cr_assert(strstr(vkllm_last_error(), "k.str") && strstr(vkllm_last_error(), "string"), "%s",
              vkllm_last_error());
    cr_assert_eq(gguf_get_f32(f, "k.str", &f32), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_bool(f, "k.u8", &b), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_str(f, "k.u8", &s), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_array(f, "k.u8", NULL, NULL), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_u32(f, "k.arr", &u32), VKLLM_ERR_FORMAT);
    cr_assert_eq(gguf_get_u32(f, "absent", &u32), VKLLM_ERR_NOT_FOUND);
    cr_assert(strstr(vkllm_last_error(), "absent"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_get_str(f, "absent", &s), VKLLM_ERR_NOT_FOUND);

    gguf_close(f);
    free(mem);
    gguf_writer_destroy(w);
}

/* ------------------------------------------------------------------ writer refusals */

Test(gguf, writer_refuses_bad_input) {
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    uint64_t ne[2] = {32, 2};
    uint8_t data[2 * 34] = {0};
    cr_assert_eq(gguf_writer_add_u32(w, "k", 1), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_u32(w, "k", 2), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "duplicate key 'k'"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_writer_add_str(w, "", "x"), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_set_alignment(w, 48), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_add_u64(w, "general.alignment", 64), VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_add_array(w, "b", GGUF_TYPE_BOOL, (uint8_t[]){0, 2}, 2),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_add_array(w, "n", GGUF_TYPE_ARRAY, data, 1),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_Q8_0, data), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "t", 2, ne, GGML_TYPE_Q8_0, data),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "duplicate tensor 't'"), "%s", vkllm_last_error());
    uint64_t bad_ne[2] = {33, 2};
    cr_assert_eq(gguf_writer_add_tensor(w, "u", 2, bad_ne, GGML_TYPE_Q8_0, data),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert(strstr(vkllm_last_error(), "block size 32"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_writer_add_tensor(w, "v", 2, ne, (ggml_type)16, data), VKLLM_ERR_UNSUPPORTED);
    cr_assert(strstr(vkllm_last_error(), "IQ2_XXS"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_writer_add_tensor(w, "w", 5, ne, GGML_TYPE_F32, data),
                 VKLLM_ERR_INVALID_ARGUMENT);
    char long_name[80];
    memset(long_name, 'x', 64);
    long_name[64] = '\0';
    cr_assert_eq(gguf_writer_add_tensor(w, long_name, 2, ne, GGML_TYPE_Q8_0, data),
                 VKLLM_ERR_INVALID_ARGUMENT);
    cr_assert_eq(gguf_writer_set_alignment(w, 64), VKLLM_ERR_INVALID_ARGUMENT,
                 "alignment cannot change once tensors exist");
    uint64_t huge[2] = {1ull << 40, 1ull << 40};
    cr_assert_eq(gguf_writer_add_tensor(w, "huge", 2, huge, GGML_TYPE_F32, data),
                 VKLLM_ERR_INVALID_ARGUMENT);
    /* The writer is still consistent: the refused adds left nothing behind. */
    void *mem;
    gguf_file *f = open_written(w, &mem);
    cr_assert_eq(f->n_kv, 1);
    cr_assert_eq(f->n_tensors, 1);
    cr_assert_eq(f->alignment, 32);
    gguf_close(f);
    free(mem);
    gguf_writer_destroy(w);
}

static vkllm_status failing_fill(void *user, const gguf_writer_tensor_desc *desc, uint8_t *dst) {
    return vkl_fail(VKLLM_ERR_IO, "synthetic failure");
}

Test(gguf, writer_fill_failure_removes_file) {
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    uint64_t ne[1] = {4};
    cr_assert_eq(gguf_writer_add_tensor_fill(w, "t", 1, ne, GGML_TYPE_F32, failing_fill, NULL),
                 VKLLM_OK);
    const char *path = VKLLM_BINARY_DIR "/test_gguf_fill_fail.gguf";
    cr_assert_eq(gguf_writer_write_file(w, path), VKLLM_ERR_IO);
    cr_assert(strstr(vkllm_last_error(), "filling tensor 't'"), "%s", vkllm_last_error());
    cr_assert(strstr(vkllm_last_error(), "synthetic failure"), "%s", vkllm_last_error());
    FILE *fp = fopen(path, "rb");
    cr_assert_null(fp, "partial file left behind");
    gguf_writer_destroy(w);
}

Test(gguf, empty_file_without_tensors) {
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    void *mem;
    gguf_file *f = open_written(w, &mem);
    cr_assert_eq(f->size, 24, "header only, no padding without tensors");
    cr_assert_eq(f->n_kv, 0);
    cr_assert_eq(f->n_tensors, 0);
    gguf_close(f);
    free(mem);
    gguf_writer_destroy(w);
}

Test(gguf, type_table) {
    ggml_type_info q4k = ggml_type_get_info(GGML_TYPE_Q4_K);
    cr_assert_str_eq(q4k.name, "Q4_K");
    cr_assert_eq(q4k.block_elems, 256);
    cr_assert_eq(q4k.block_bytes, 144);
    cr_assert_eq(ggml_type_get_info(GGML_TYPE_Q5_0).block_bytes, 22);
    cr_assert_eq(ggml_type_get_info(GGML_TYPE_BF16).block_bytes, 2);
    ggml_type_info iq = ggml_type_get_info(16);
    cr_assert_str_eq(iq.name, "IQ2_XXS");
    cr_assert_eq(iq.block_elems, 0);
    cr_assert_str_eq(ggml_type_get_info(1000).name, "unknown");
    cr_assert_eq(ggml_row_bytes(GGML_TYPE_Q6_K, 512), 420);
    cr_assert_eq(ggml_row_bytes(GGML_TYPE_Q6_K, 500), 0);
    cr_assert_eq(ggml_row_bytes(16, 256), 0);
}

/* ------------------------------------------------------------------ the real model */

Test(gguf, real_model_gemma3_270m) {
    FILE *probe = fopen(MODEL_PATH, "rb");
    if (!probe) cr_skip_test("%s absent (tools/fetch_model.sh fetches it)", MODEL_PATH);
    fclose(probe);
    gguf_file *f;
    cr_assert_eq(gguf_open(MODEL_PATH, &f), VKLLM_OK, "%s", vkllm_last_error());
    gguf_str arch;
    cr_assert_eq(gguf_get_str(f, "general.architecture", &arch), VKLLM_OK);
    cr_assert(gguf_str_eq(arch, "gemma3"));
    uint32_t n_layer, n_embd, n_ff;
    cr_assert_eq(gguf_get_u32(f, "gemma3.block_count", &n_layer), VKLLM_OK);
    cr_assert_eq(gguf_get_u32(f, "gemma3.embedding_length", &n_embd), VKLLM_OK);
    cr_assert_eq(gguf_get_u32(f, "gemma3.feed_forward_length", &n_ff), VKLLM_OK);
    cr_assert_eq(n_layer, 18);
    cr_assert_eq(n_embd, 640);
    cr_assert_eq(n_ff, 2048);
    gguf_value_type et;
    uint64_t n_tokens;
    cr_assert_eq(gguf_get_array(f, "tokenizer.ggml.tokens", &et, &n_tokens), VKLLM_OK);
    cr_assert_eq(et, GGUF_TYPE_STRING);
    cr_assert_eq(n_tokens, 262144);
    const gguf_kv *tokens = gguf_find_kv(f, "tokenizer.ggml.tokens");
    cr_assert(gguf_str_eq(gguf_array_str(tokens, 2), "<bos>"), "token 2 is <bos>");
    cr_assert_eq(f->n_tensors, 2 + 13 * 18, "output_norm + token_embd + 13 per layer");
    cr_assert_null(gguf_find_tensor(f, "output.weight"), "embeddings are tied");

    /* Shapes by name; the types seen are the real Q4_K_M mapping for this model. */
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    cr_assert(emb && emb->ne[0] == 640 && emb->ne[1] == 262144 && emb->type == GGML_TYPE_Q8_0);
    uint64_t total_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        ggml_type_info info = ggml_type_get_info(t->type);
        cr_assert_eq(t->n_bytes,
                     ggml_row_bytes(t->type, t->ne[0]) * t->ne[1] * t->ne[2] * t->ne[3]);
        cr_assert_eq(t->n_elements, t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        cr_assert_eq(t->ne[0] % info.block_elems, 0);
        cr_assert_eq((t->data_offset - f->data_start) % f->alignment, 0);
        total_bytes += t->n_bytes;
    }
    cr_assert_leq(total_bytes, f->size - f->data_start);
    static const bool more_bits[18] = {1, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 1};
    for (int l = 0; l < 18; l++) {
        char name[64];
        struct {
            const char *suffix;
            uint64_t ne0, ne1;
            ggml_type type;
        } expect[] = {
            {"attn_q.weight", 640, 1024, GGML_TYPE_Q5_0},
            {"attn_k.weight", 640, 256, GGML_TYPE_Q5_0},
            {"attn_v.weight", 640, 256, more_bits[l] ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_0},
            {"attn_output.weight", 1024, 640, GGML_TYPE_Q4_K},
            {"ffn_gate.weight", 640, 2048, GGML_TYPE_Q5_0},
            {"ffn_up.weight", 640, 2048, GGML_TYPE_Q5_0},
            {"ffn_down.weight", 2048, 640, more_bits[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K},
            {"attn_norm.weight", 640, 1, GGML_TYPE_F32},
            {"attn_q_norm.weight", 256, 1, GGML_TYPE_F32},
            {"attn_k_norm.weight", 256, 1, GGML_TYPE_F32},
            {"post_attention_norm.weight", 640, 1, GGML_TYPE_F32},
            {"ffn_norm.weight", 640, 1, GGML_TYPE_F32},
            {"post_ffw_norm.weight", 640, 1, GGML_TYPE_F32},
        };
        for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s", l, expect[k].suffix);
            const gguf_tensor *t = gguf_find_tensor(f, name);
            cr_assert(t, "%s missing", name);
            cr_assert_eq(t->ne[0], expect[k].ne0, "%s ne0", name);
            cr_assert_eq(t->ne[1], expect[k].ne1, "%s ne1", name);
            cr_assert_eq(t->type, expect[k].type, "%s type %s", name,
                         ggml_type_get_info(t->type).name);
        }
    }
    gguf_close(f);
}
