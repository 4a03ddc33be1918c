/* tok_bytes.c: UTF-8 helpers and the byte-level BPE alphabet.
 *
 * The alphabet (GPT-2's bytes_to_unicode): bytes 0x21-0x7E, 0xA1-0xAC and 0xAE-0xFF stand
 * for the code point of the same value; the other 68 bytes map to U+0100, U+0101, ... in
 * increasing byte order. The map is a bijection between the 256 bytes and 256 code points
 * below U+0144. The 68 non-printing bytes are 0x00-0x20 (33), 0x7F-0xA0 (34) and 0xAD, so
 * both directions have a closed form. */
#include "model/tok_internal.h"

static bool tok_byte_prints_as_itself(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t tok_byte_to_cp(uint8_t byte) {
    if (tok_byte_prints_as_itself(byte)) return byte;
    if (byte <= 0x20) return 0x100u + byte;
    if (byte <= 0xA0) return 0x100u + 33 + (byte - 0x7Fu);
    return 0x100u + 67; /* 0xAD */
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return tok_byte_prints_as_itself(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(0x7F + (k - 33));
    return 0xAD;
}

size_t tok_utf8_put(uint32_t cp, char *dst) {
    if (cp < 0x80) {
        dst[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        dst[0] = (char)(0xC0 | (cp >> 6));
        dst[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (char)(0xE0 | (cp >> 12));
        dst[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (char)(0xF0 | (cp >> 18));
    dst[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t tok_utf8_len(uint8_t b) {
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) return 2;
    if (b >= 0xE0 && b <= 0xEF) return 3;
    if (b >= 0xF0 && b <= 0xF4) return 4;
    return 1;
}

size_t tok_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const uint8_t *u = (const uint8_t *)s;
    size_t len = tok_utf8_len(u[0]);
    if (len == 1 || len > n) {
        *cp = u[0] < 0x80 ? u[0] : (0x80000000u | u[0]);
        return 1;
    }
    /* Second-byte ranges exclude overlongs, surrogates and code points past U+10FFFF. */
    uint8_t lo = 0x80, hi = 0xBF;
    if (u[0] == 0xE0) lo = 0xA0;
    if (u[0] == 0xED) hi = 0x9F;
    if (u[0] == 0xF0) lo = 0x90;
    if (u[0] == 0xF4) hi = 0x8F;
    if (u[1] < lo || u[1] > hi) {
        *cp = 0x80000000u | u[0];
        return 1;
    }
    for (size_t i = 2; i < len; i++)
        if ((u[i] & 0xC0) != 0x80) {
            *cp = 0x80000000u | u[0];
            return 1;
        }
    uint32_t v = len == 2 ? (u[0] & 0x1Fu) : len == 3 ? (u[0] & 0x0Fu) : (u[0] & 0x07u);
    for (size_t i = 1; i < len; i++)
        v = (v << 6) | (u[i] & 0x3Fu);
    *cp = v;
    return len;
}
