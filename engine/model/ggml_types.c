/* ggml_types.c: the table of ggml tensor type ids -> name and block geometry.
 *
 * Invariant: a type has non-zero block_elems/block_bytes exactly when vkllm can
 * size (and so load) tensors of it; ids that are known but unsupported (IQ
 * formats, ternary, MXFP4, removed ids) keep their name so error messages can
 * say "IQ2_XXS (16) is not supported" instead of a bare number. */
#include "model/gguf.h"

#include <stddef.h>

typedef struct type_entry {
    const char *name;
    uint32_t block_elems;
    uint32_t block_bytes;
} type_entry;

/* Geometry from the GGUF fact sheet §2; unsupported ids carry only their name. */
static const type_entry type_table[] = {
    [0] = {"F32", 1, 4},
    [1] = {"F16", 1, 2},
    [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},
    [4] = {"Q4_2 (removed)", 0, 0},
    [5] = {"Q4_3 (removed)", 0, 0},
    [6] = {"Q5_0", 32, 22},
    [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},
    [9] = {"Q8_1", 32, 36},
    [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},
    [12] = {"Q4_K", 256, 144},
    [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},
    [15] = {"Q8_K", 256, 292},
    [16] = {"IQ2_XXS", 0, 0},
    [17] = {"IQ2_XS", 0, 0},
    [18] = {"IQ3_XXS", 0, 0},
    [19] = {"IQ1_S", 0, 0},
    [20] = {"IQ4_NL", 0, 0},
    [21] = {"IQ3_S", 0, 0},
    [22] = {"IQ2_S", 0, 0},
    [23] = {"IQ4_XS", 0, 0},
    [24] = {"I8", 1, 1},
    [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},
    [27] = {"I64", 1, 8},
    [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 0, 0},
    [30] = {"BF16", 1, 2},
    [31] = {"Q4_0_4_4 (removed)", 0, 0},
    [32] = {"Q4_0_4_8 (removed)", 0, 0},
    [33] = {"Q4_0_8_8 (removed)", 0, 0},
    [34] = {"TQ1_0", 0, 0},
    [35] = {"TQ2_0", 0, 0},
    [36] = {"IQ4_NL_4_4 (removed)", 0, 0},
    [37] = {"IQ4_NL_4_8 (removed)", 0, 0},
    [38] = {"IQ4_NL_8_8 (removed)", 0, 0},
    [39] = {"MXFP4", 0, 0},
    [40] = {"NVFP4", 0, 0},
};

ggml_type_info ggml_type_get_info(uint32_t type) {
    ggml_type_info info = {"unknown", 0, 0};
    if (type < sizeof type_table / sizeof type_table[0] && type_table[type].name) {
        info.name = type_table[type].name;
        info.block_elems = type_table[type].block_elems;
        info.block_bytes = type_table[type].block_bytes;
    }
    return info;
}

uint64_t ggml_row_bytes(uint32_t type, uint64_t n) {
    ggml_type_info info = ggml_type_get_info(type);
    if (info.block_elems == 0 || n % info.block_elems != 0) return 0;
    uint64_t blocks = n / info.block_elems;
    if (blocks > UINT64_MAX / info.block_bytes) return 0;
    return blocks * info.block_bytes;
}
