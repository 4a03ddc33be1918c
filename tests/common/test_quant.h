/* test_quant.h: random quantized weights for the int8-path kernel tests (matvec_dp4a
 * with its RMSNorm and GLU prologues). Header-only so that vkl_testutil does not depend
 * on the model module.
 *
 * test_random_quant_blocks fills the n / block_elems blocks of a Q4_0, Q8_0, Q4_K or Q6_K
 * tensor with random quant bytes and fp16 scales from sane ranges (random scale bits would
 * give NaN or Inf): d in [-0.02, 0.02), and Q4_K's dmin in [0, 0.002). */
#ifndef VKL_TEST_QUANT_H
#define VKL_TEST_QUANT_H

#include <stdint.h>
#include <string.h>

#include "common/test_util.h"
#include "model/gguf.h"

static inline void test_random_quant_blocks(test_rng *rng, ggml_type type, uint64_t n,
                                            uint8_t *dst) {
    ggml_type_info info = ggml_type_get_info(type);
    for (uint64_t b = 0; b < n / info.block_elems; b++) {
        uint8_t *blk = dst + b * info.block_bytes;
        for (uint32_t i = 0; i < info.block_bytes; i++)
            blk[i] = (uint8_t)test_rng_next(rng);
        uint16_t d = test_f32_to_f16(test_rng_uniform(rng, -0.02f, 0.02f));
        uint16_t m = test_f32_to_f16(test_rng_uniform(rng, 0.0f, 0.002f));
        if (type == GGML_TYPE_Q6_K) {
            memcpy(blk + 208, &d, 2); /* d is the last field of a Q6_K block */
        } else {
            memcpy(blk, &d, 2);
            if (type == GGML_TYPE_Q4_K) memcpy(blk + 2, &m, 2);
        }
    }
}

#endif
