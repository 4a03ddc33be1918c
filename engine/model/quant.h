/* quant.h: CPU conversion between ggml tensor encodings and float32.
 *
 * quant_dequantize() decodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the
 * K-quants Q2_K..Q6_K (block layouts: docs/gguf-and-models.md §3). It reproduces
 * gguf-py's `gguf.quants.dequantize` bit for bit (same float32 operation order), so
 * it serves as the CPU reference for GPU kernels. quant_quantize() encodes F32, F16,
 * BF16 and the legacy 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) with the
 * reference (non-search) recipes; it is for synthetic models and tests, not quality.
 * n_elements must be a multiple of the type's block size; data is tightly packed
 * blocks (any byte alignment). Module prefix: quant_. */
#ifndef VKL_QUANT_H
#define VKL_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "model/gguf.h"

/* True for the types quant_dequantize() / quant_quantize() handle. */
bool quant_can_dequantize(ggml_type type);
bool quant_can_quantize(ggml_type type);

/* Decodes n_elements values of `type` from src into dst. VKLLM_ERR_UNSUPPORTED for
 * other types, VKLLM_ERR_INVALID_ARGUMENT when n is not a multiple of the block. */
vkllm_status quant_dequantize(ggml_type type, const void *src, float *dst, uint64_t n_elements);

/* Encodes n_elements floats into `type` blocks at dst (quant_row_bytes(type, n) bytes). */
vkllm_status quant_quantize(ggml_type type, const float *src, void *dst, uint64_t n_elements);

/* Bytes taken by n elements of `type`; 0 when the type has no known geometry or n is
 * not a multiple of its block size. */
uint64_t quant_row_bytes(ggml_type type, uint64_t n);

/* IEEE binary16: exact widening (NaN payloads kept); narrowing rounds to nearest
 * even, overflows to infinity, keeps NaNs quiet NaNs. */
float quant_f16_to_f32(uint16_t h);
uint16_t quant_f32_to_f16(float f);
/* bfloat16 = the top half of a binary32; narrowing rounds to nearest even. */
float quant_bf16_to_f32(uint16_t h);
uint16_t quant_f32_to_bf16(float f);

#endif
