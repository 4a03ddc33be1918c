/* test_gguf_corrupt.c: the GGUF reader on malformed input.
 *
 * Each failure class gets a hand-built file (raw bytes, not the writer, which refuses
 * to produce them) and asserts the status and that the message names the field and
 * its offset. Then: every prefix of a valid file and every single-byte change of
 * its header region must open cleanly or fail with a message (never crash; CI runs
 * this under ASan/UBSan), and every file in tests/fixtures/gguf/ (the fuzz corpus,
 * crash reproducers included) is replayed the same way. */
// links: model common
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/gguf_write.h"

#define FIXTURE_DIR VKLLM_SOURCE_DIR "/tests/fixtures/gguf"

/* ------------------------------------------------------------------ byte builder */

typedef struct bytes {
    uint8_t *d;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->d = realloc(b->d, b->cap);
    }
    memcpy(b->d + b->n, src, n);
    b->n += n;
}
static void put_u8(bytes *b, uint8_t v) {
    put(b, &v, 1);
}
static void put_u32(bytes *b, uint32_t v) {
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, t, 4);
}
static void put_u64(bytes *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_str(bytes *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(bytes *b, size_t a) {
    while (b->n % a)
        put_u8(b, 0);
}

static bytes header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    bytes b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, version);
    put_u64(&b, n_tensors);
    put_u64(&b, n_kv);
    return b;
}

/* kv with a scalar u32 value */
static void put_kv_u32(bytes *b, const char *key, uint32_t v) {
    put_str(b, key);
    put_u32(b, GGUF_TYPE_UINT32);
    put_u32(b, v);
}

/* Opens the image and asserts the status and that each given substring is in the
 * message (NULL-terminated list). */
static void expect_fail(bytes *b, vkllm_status want, const char *const *needles) {
    gguf_file *f = NULL;
    vkllm_status st = gguf_open_memory(b->d, b->n, "bad.gguf", &f);
    const char *msg = vkllm_last_error();
    cr_assert_eq(st, want, "status %s, want %s; message: %s", vkllm_status_name(st),
                 vkllm_status_name(want), msg);
    cr_assert_null(f);
    cr_assert(strstr(msg, "bad.gguf"), "message lacks the file label: %s", msg);
    for (const char *const *n = needles; *n; n++)
        cr_assert(strstr(msg, *n), "message lacks \"%s\": %s", *n, msg);
    free(b->d);
}

#define EXPECT_FAIL(b, status, ...)                                                                \
    expect_fail(&(b), (status), (const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------ header */

Test(gguf_corrupt, empty_and_truncated_header) {
    bytes b = {0};
    put_u8(&b, 'G');
    b.n = 0;
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "truncated", "magic", "offset 0");
    b = header(3, 0, 0);
    b.n = 6;
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "truncated", "header version", "offset 4");
    b = header(3, 0, 0);
    b.n = 20;
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "truncated", "kv_count", "offset 16");
}

Test(gguf_corrupt, bad_magic) {
    bytes b = header(3, 0, 0);
    memcpy(b.d, "GGML", 4);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "bad magic", "47 47 4d 4c", "offset 0");
}

Test(gguf_corrupt, versions) {
    bytes b = header(1, 0, 0);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "version 1", "offset 4");
    b = header(4, 0, 0);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "version 4", "only 2 and 3");
    b = header(0, 0, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "version 0");
    b = header(0x03000000u, 0, 0);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "byte-swapped", "big-endian");
    /* version 2 is accepted (same layout as 3) */
    b = header(2, 0, 1);
    put_kv_u32(&b, "a", 5);
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(b.d, b.n, "v2.gguf", &f), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(f->version, 2);
    uint32_t v;
    cr_assert_eq(gguf_get_u32(f, "a", &v), VKLLM_OK);
    cr_assert_eq(v, 5);
    gguf_close(f);
    free(b.d);
}

Test(gguf_corrupt, absurd_counts_refused_before_allocation) {
    bytes b = header(3, 0, UINT64_MAX / 2);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv_count", "impossible", "offset 16");
    b = header(3, 1ull << 60, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor_count", "impossible", "offset 8");
    /* A count that is small in absolute terms but larger than the bytes left. */
    b = header(3, 0, 3);
    put_kv_u32(&b, "a", 1);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv_count 3");
}

/* ------------------------------------------------------------------ metadata */

Test(gguf_corrupt, unknown_value_type) {
    bytes b = header(3, 0, 1);
    put_str(&b, "k.x");
    put_u32(&b, 13);
    put_u32(&b, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv 0 'k.x'", "unknown value type 13", "offset 35");
}

Test(gguf_corrupt, truncated_value_and_string) {
    bytes b = header(3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_UINT64);
    put_u32(&b, 0); /* 4 of 8 bytes */
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "truncated", "kv 0 'k' value", "offset 37");
    b = header(3, 0, 1);
    put_str(&b, "k");
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 1000);
    put(&b, "short", 5);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "string length 1000", "longer than", "offset 37");
    b = header(3, 0, 1);
    put_u64(&b, UINT64_MAX); /* key length */
    put_u64(&b, 0);          /* enough bytes left that kv_count 1 is plausible */
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv 0 key", "string length 18446744073709551615");
}

Test(gguf_corrupt, empty_and_duplicate_keys) {
    bytes b = header(3, 0, 1);
    put_kv_u32(&b, "", 1);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv 0", "empty key", "offset 24");
    b = header(3, 0, 3);
    put_kv_u32(&b, "a.b", 1);
    put_kv_u32(&b, "c", 1);
    size_t third = b.n;
    put_kv_u32(&b, "a.b", 2);
    char where[64];
    snprintf(where, sizeof where, "offset %zu", third);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "kv 2", "duplicate key 'a.b'", "kv 0 at offset 24", where);
}

Test(gguf_corrupt, bool_not_0_or_1) {
    bytes b = header(3, 0, 1);
    put_str(&b, "flag");
    put_u32(&b, GGUF_TYPE_BOOL);
    put_u8(&b, 2);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'flag'", "bool value 2", "offset 40");
    b = header(3, 0, 1);
    put_str(&b, "flags");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_BOOL);
    put_u64(&b, 3);
    put_u8(&b, 1);
    put_u8(&b, 0);
    put_u8(&b, 7);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'flags'", "element 2 is bool 7", "offset 55");
}

Test(gguf_corrupt, arrays) {
    bytes b = header(3, 0, 1);
    put_str(&b, "nest");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u64(&b, 1);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "'nest'", "nested arrays", "offset 40");
    b = header(3, 0, 1);
    put_str(&b, "odd");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, 77);
    put_u64(&b, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'odd'", "unknown array element type 77");
    b = header(3, 0, 1);
    put_str(&b, "big");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_UINT32);
    put_u64(&b, 1ull << 61);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'big'", "2305843009213693952 elements of uint32",
                "offset 43");
    b = header(3, 0, 1);
    put_str(&b, "strs");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, UINT64_MAX);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'strs'", "strings cannot fit");
    b = header(3, 0, 1);
    put_str(&b, "strs");
    put_u32(&b, GGUF_TYPE_ARRAY);
    put_u32(&b, GGUF_TYPE_STRING);
    put_u64(&b, 3);
    put_str(&b, "ok");
    size_t second = b.n;
    put_u64(&b, 99);
    put(&b, "abcdefgh", 8);
    char where[64];
    snprintf(where, sizeof where, "offset %zu", second);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "'strs' value element 1", "string length 99", where);
}

Test(gguf_corrupt, alignment_key) {
    bytes b = header(3, 0, 1);
    put_str(&b, "general.alignment");
    put_u32(&b, GGUF_TYPE_UINT64);
    put_u64(&b, 32);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "general.alignment", "type uint64 (must be uint32)",
                "offset 24");
    b = header(3, 0, 1);
    put_kv_u32(&b, "general.alignment", 48);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "general.alignment", "48 is not a non-zero power of two");
    b = header(3, 0, 1);
    put_kv_u32(&b, "general.alignment", 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "general.alignment", "0 is not");
}

/* ------------------------------------------------------------------ tensors */

typedef struct tinfo {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[5];
    uint32_t type;
    uint64_t offset;
} tinfo;

static void put_tinfo(bytes *b, const tinfo *t) {
    put_str(b, t->name);
    put_u32(b, t->n_dims);
    for (uint32_t d = 0; d < t->n_dims; d++)
        put_u64(b, t->ne[d]);
    put_u32(b, t->type);
    put_u64(b, t->offset);
}

/* A file with the given infos, padding to 32 and `data_bytes` zero bytes of data. */
static bytes tensor_file(const tinfo *infos, int n, size_t data_bytes) {
    bytes b = header(3, (uint64_t)n, 0);
    for (int i = 0; i < n; i++)
        put_tinfo(&b, &infos[i]);
    pad_to(&b, 32);
    for (size_t i = 0; i < data_bytes; i++)
        put_u8(&b, 0);
    return b;
}

Test(gguf_corrupt, tensor_valid_baseline) {
    tinfo t[2] = {{"a", 2, {32, 2}, GGML_TYPE_Q8_0, 0}, {"b", 1, {3}, GGML_TYPE_F32, 96}};
    bytes b = tensor_file(t, 2, 96 + 12);
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(b.d, b.n, "ok.gguf", &f), VKLLM_OK, "%s", vkllm_last_error());
    cr_assert_eq(f->tensors[0].n_bytes, 68);
    cr_assert_eq(f->tensors[1].data_offset, f->data_start + 96);
    gguf_close(f);
    free(b.d);
}

Test(gguf_corrupt, tensor_shape_errors) {
    tinfo t = {"x", 5, {1, 1, 1, 1, 1}, GGML_TYPE_F32, 0};
    bytes b = tensor_file(&t, 1, 4);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'x'", "n_dims 5 exceeds 4", "offset 33");
    t = (tinfo){"x", 2, {4, 1ull << 63}, GGML_TYPE_F32, 0};
    b = tensor_file(&t, 1, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'x' ne[1]", "negative", "offset 45");
    t = (tinfo){"x", 3, {1ull << 32, 1ull << 32, 4}, GGML_TYPE_F32, 0};
    b = tensor_file(&t, 1, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'x'", "element count", "overflows");
    t = (tinfo){"x", 2, {1ull << 40, 1ull << 22}, GGML_TYPE_F32, 0};
    b = tensor_file(&t, 1, 0);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'x'", "byte size of F32", "overflows");
    t = (tinfo){"x", 2, {48, 2}, GGML_TYPE_Q4_0, 0};
    b = tensor_file(&t, 1, 64);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'x'",
                "ne[0] = 48 is not a multiple of the Q4_0 "
                "block size 32");
    char long_name[70];
    memset(long_name, 'n', 64);
    long_name[64] = '\0';
    t = (tinfo){long_name, 1, {4}, GGML_TYPE_F32, 0};
    b = tensor_file(&t, 1, 16);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0", "name length 64 exceeds 63", "offset 24");
}

Test(gguf_corrupt, tensor_types) {
    tinfo t = {"iq", 1, {256}, 16, 0};
    bytes b = tensor_file(&t, 1, 66);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "tensor 0 'iq'", "IQ2_XXS (16) is not supported",
                "offset 46");
    t = (tinfo){"u", 1, {4}, 99, 0};
    b = tensor_file(&t, 1, 16);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "tensor 0 'u'", "unknown (99)");
    t = (tinfo){"r", 1, {32}, 4, 0};
    b = tensor_file(&t, 1, 32);
    EXPECT_FAIL(b, VKLLM_ERR_UNSUPPORTED, "Q4_2 (removed) (4)");
}

Test(gguf_corrupt, tensor_offsets_and_bounds) {
    tinfo t[2] = {{"a", 1, {8}, GGML_TYPE_F32, 0}, {"b", 1, {8}, GGML_TYPE_F32, 40}};
    bytes b = tensor_file(t, 2, 128);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 1 'b'",
                "offset 40 is not a multiple of the "
                "alignment 32");
    t[1].offset = 64; /* aligned but leaves a gap: llama.cpp requires packed order */
    b = tensor_file(t, 2, 128);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 1 'b'", "data offset 64, expected 32", "offset 57");
    t[1].offset = 32;
    b = tensor_file(t, 2, 32 + 31); /* second tensor needs 32 bytes, only 31 there */
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 1 'b'", "past end of file", "offset 57");
    tinfo big = {"a", 1, {8}, GGML_TYPE_F32, 0};
    b = tensor_file(&big, 1, 0);
    b.n -= 1; /* the padding before the data is cut short too */
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor data should start at");
    tinfo dup[2] = {{"same", 1, {8}, GGML_TYPE_F32, 0}, {"same", 1, {8}, GGML_TYPE_F32, 32}};
    b = tensor_file(dup, 2, 64);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 1", "duplicate tensor name 'same'", "also tensor 0");
    tinfo huge_off = {"a", 1, {8}, GGML_TYPE_F32, UINT64_MAX - 31};
    b = tensor_file(&huge_off, 1, 32);
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "tensor 0 'a'");
}

Test(gguf_corrupt, tensor_info_truncated) {
    tinfo t = {"abc", 2, {32, 2}, GGML_TYPE_Q8_0, 0};
    bytes b = header(3, 1, 0);
    put_tinfo(&b, &t);
    b.n -= 9; /* cut inside the type field */
    EXPECT_FAIL(b, VKLLM_ERR_FORMAT, "truncated", "tensor 0 'abc' type");
}

/* ------------------------------------------------------------------ sweeps */

static uint8_t *valid_image(uint64_t *size) {
    gguf_writer *w;
    cr_assert_eq(gguf_writer_create(&w), VKLLM_OK);
    static const char *const strs[] = {"a", "bb", ""};
    static const float floats[] = {1, 2, 3};
    static uint8_t data[34 * 2 + 16];
    cr_assert_eq(gguf_writer_add_str(w, "general.architecture", "x"), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_str_array(w, "s", strs, 3), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_array(w, "f", GGUF_TYPE_FLOAT32, floats, 3), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_bool(w, "b", true), VKLLM_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "t0", 2, (uint64_t[]){32, 2}, GGML_TYPE_Q8_0, data),
                 VKLLM_OK);
    cr_assert_eq(gguf_writer_add_tensor(w, "t1", 1, (uint64_t[]){4}, GGML_TYPE_F32, data),
                 VKLLM_OK);
    void *mem;
    cr_assert_eq(gguf_writer_write_memory(w, &mem, size), VKLLM_OK);
    gguf_writer_destroy(w);
    return mem;
}

/* Prefixes that cut any byte up to the end of the last tensor's data fail with a
 * message; longer ones (only the final padding missing) are valid. */
Test(gguf_corrupt, every_truncation_fails_cleanly) {
    uint64_t size;
    uint8_t *img = valid_image(&size);
    gguf_file *full;
    cr_assert_eq(gguf_open_memory(img, size, "valid", &full), VKLLM_OK, "%s", vkllm_last_error());
    const gguf_tensor *last = &full->tensors[full->n_tensors - 1];
    uint64_t data_end = last->data_offset + last->n_bytes;
    gguf_close(full);
    cr_assert_lt(data_end, size, "the sample should end with padding");
    for (uint64_t n = 0; n < size; n++) {
        /* A fresh exact-size copy so ASan sees any read past the end. */
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, img, n);
        gguf_file *f = NULL;
        vkllm_status st = gguf_open_memory(copy, n, "prefix", &f);
        if (n >= data_end) {
            cr_assert_eq(st, VKLLM_OK, "prefix of %llu bytes: %s", (unsigned long long)n,
                         vkllm_last_error());
            gguf_close(f);
            free(copy);
            continue;
        }
        cr_assert_eq(st, VKLLM_ERR_FORMAT, "prefix of %llu bytes: %s (%s)", (unsigned long long)n,
                     vkllm_status_name(st), vkllm_last_error());
        cr_assert(strstr(vkllm_last_error(), "offset"), "%s", vkllm_last_error());
        free(copy);
    }
    free(img);
}

Test(gguf_corrupt, every_header_byte_flip_is_handled) {
    uint64_t size;
    uint8_t *img = valid_image(&size);
    gguf_file *f;
    cr_assert_eq(gguf_open_memory(img, size, "valid", &f), VKLLM_OK, "%s", vkllm_last_error());
    uint64_t meta_end = f->data_start;
    gguf_close(f);
    const uint8_t patterns[] = {0x00, 0xff, 0x80, 0x01, 0x7f};
    uint8_t *copy = malloc(size);
    for (uint64_t i = 0; i < meta_end; i++) {
        for (size_t p = 0; p < sizeof patterns; p++) {
            memcpy(copy, img, size);
            copy[i] = patterns[p];
            f = NULL;
            vkllm_status st = gguf_open_memory(copy, size, "flip", &f);
            if (st == VKLLM_OK) {
                cr_assert_not_null(f);
                for (uint64_t t = 0; t < f->n_tensors; t++)
                    cr_assert(f->tensors[t].data_offset + f->tensors[t].n_bytes <= size);
                gguf_close(f);
            } else {
                cr_assert_null(f);
                cr_assert(vkllm_last_error()[0], "byte %llu = 0x%02x: empty message",
                          (unsigned long long)i, patterns[p]);
            }
        }
    }
    free(copy);
    free(img);
}

static void walk_everything(const gguf_file *f) {
    volatile uint64_t sink = 0;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        cr_assert(kv->key.len > 0);
        if (kv->value.type != GGUF_TYPE_ARRAY) continue;
        for (uint64_t j = 0; j < kv->value.array.count; j++) {
            gguf_str s = gguf_array_str(kv, j);
            for (uint64_t c = 0; c < s.len; c++)
                sink += (uint8_t)s.ptr[c];
            sink += (uint64_t)gguf_array_int(kv, j);
            sink += (uint64_t)gguf_array_float(kv, j);
        }
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (t->n_bytes) sink += t->data[0] + t->data[t->n_bytes - 1];
        char name[64];
        if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, t->name.len)) {
            memcpy(name, t->name.ptr, t->name.len);
            name[t->name.len] = '\0';
            cr_assert_eq(gguf_find_tensor(f, name), t, "lookup of tensor %llu",
                         (unsigned long long)i);
        }
    }
    (void)sink;
}

Test(gguf_corrupt, fixture_corpus_replays_cleanly) {
    DIR *dir = opendir(FIXTURE_DIR);
    cr_assert(dir, "cannot open %s", FIXTURE_DIR);
    struct dirent *e;
    int opened = 0;
    while ((e = readdir(dir))) {
        const char *name = e->d_name;
        size_t len = strlen(name);
        if (name[0] == '.' || (len > 4 && !strcmp(name + len - 4, ".txt"))) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FIXTURE_DIR, name);
        gguf_file *f = NULL;
        vkllm_status st = gguf_open(path, &f);
        if (!strncmp(name, "valid_", 6))
            cr_assert_eq(st, VKLLM_OK, "%s: %s", name, vkllm_last_error());
        if (st == VKLLM_OK) {
            walk_everything(f);
            gguf_close(f);
        } else {
            cr_assert_null(f);
            cr_assert(strstr(vkllm_last_error(), name), "%s: message lacks the path: %s", name,
                      vkllm_last_error());
        }
        opened++;
    }
    closedir(dir);
    cr_assert_geq(opened, 2, "corpus is nearly empty");
}

Test(gguf_corrupt, open_errors) {
    gguf_file *f = NULL;
    cr_assert_eq(gguf_open(FIXTURE_DIR "/does-not-exist.gguf", &f), VKLLM_ERR_IO);
    cr_assert(strstr(vkllm_last_error(), "does-not-exist.gguf"), "%s", vkllm_last_error());
    cr_assert_eq(gguf_open(FIXTURE_DIR, &f), VKLLM_ERR_IO);
    cr_assert(strstr(vkllm_last_error(), "not a regular file"), "%s", vkllm_last_error());
    cr_assert_null(f);
}

/* Found by the fuzzer in CI: an F32 tensor with ne[0] = 2^62 once wrapped its 64-bit
 * byte size to a small number, so readers of its data went past the file. */
Test(gguf_corrupt, row_byte_size_overflow_is_refused) {
    gguf_file *f = NULL;
    vkllm_status st = gguf_open(FIXTURE_DIR "/fuzz_crash_row_bytes_overflow.gguf", &f);
    cr_assert_eq(st, VKLLM_ERR_FORMAT, "%s", vkllm_last_error());
    cr_assert(strstr(vkllm_last_error(), "row byte size") &&
                  strstr(vkllm_last_error(), "overflows int64"),
              "%s", vkllm_last_error());
    cr_assert_null(f);
}
