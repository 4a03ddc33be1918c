/* fuzz_gguf.c: libFuzzer target for the GGUF reader (and the dequantizers it feeds).
 *
 * Each input is opened with gguf_open_memory() from an exact-size heap copy (so
 * ASan catches any read past the end). On success every key is read through every
 * typed getter, every array element through every accessor, every tensor is
 * looked up by name and its first blocks dequantized. Any crash, sanitizer report
 * or broken invariant (abort) is a bug; keep the input in tests/fixtures/gguf/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/gguf.h"
#include "model/quant.h"

static void check(int ok) {
    if (!ok) abort(); /* an invariant of gguf.h does not hold */
}

static void walk_kv(const gguf_file *f, const gguf_kv *kv) {
    char key[256];
    volatile uint64_t sink = 0;
    volatile double fsink = 0.0;
    if (kv->key.len < sizeof key && !memchr(kv->key.ptr, 0, kv->key.len)) {
        memcpy(key, kv->key.ptr, kv->key.len);
        key[kv->key.len] = '\0';
        check(gguf_find_kv(f, key) == kv);
        uint32_t u32;
        uint64_t u64;
        int32_t i32;
        int64_t i64;
        float f32;
        bool b;
        gguf_str s;
        gguf_value_type et;
        uint64_t count;
        sink += gguf_get_u32(f, key, &u32) + gguf_get_u64(f, key, &u64);
        sink += gguf_get_i32(f, key, &i32) + gguf_get_i64(f, key, &i64);
        sink += gguf_get_f32(f, key, &f32) + gguf_get_bool(f, key, &b);
        sink += gguf_get_str(f, key, &s) + gguf_get_array(f, key, &et, &count);
    }
    if (kv->value.type == GGUF_TYPE_STRING) {
        for (uint64_t i = 0; i < kv->value.str.len; i++)
            sink += (uint8_t)kv->value.str.ptr[i];
    }
    if (kv->value.type != GGUF_TYPE_ARRAY) return;
    for (uint64_t i = 0; i <= kv->value.array.count; i++) { /* one past the end too */
        gguf_str s = gguf_array_str(kv, i);
        if (s.len) sink += (uint8_t)s.ptr[0] + (uint8_t)s.ptr[s.len - 1];
        sink += (uint64_t)gguf_array_int(kv, i);
        fsink += gguf_array_float(kv, i); /* may be negative, NaN, inf: no integer cast */
    }
    (void)sink;
    (void)fsink;
}

static void walk_tensor(const gguf_file *f, const gguf_tensor *t) {
    check(t->data >= f->base && t->n_bytes <= f->size &&
          (uint64_t)(t->data - f->base) <= f->size - t->n_bytes);
    char name[64];
    if (t->name.len < sizeof name && !memchr(t->name.ptr, 0, t->name.len)) {
        memcpy(name, t->name.ptr, t->name.len);
        name[t->name.len] = '\0';
        check(gguf_find_tensor(f, name) == t);
    }
    if (!quant_can_dequantize(t->type)) return;
    ggml_type_info info = ggml_type_get_info(t->type);
    uint64_t n = t->n_elements < 1024 ? t->n_elements : 1024;
    n -= n % info.block_elems;
    float out[1024];
    check(quant_dequantize(t->type, t->data, out, n) == VKLLM_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    gguf_file *f = NULL;
    if (gguf_open_memory(copy, size, "fuzz", &f) == VKLLM_OK) {
        for (uint64_t i = 0; i < f->n_kv; i++)
            walk_kv(f, &f->kv[i]);
        for (uint64_t i = 0; i < f->n_tensors; i++)
            walk_tensor(f, &f->tensors[i]);
        gguf_close(f);
    } else {
        check(f == NULL && vkllm_last_error()[0] != '\0');
    }
    free(copy);
    return 0;
}
