/* The low-precision state codec of the fused kernel (included once by kernel.c, one translation unit). */
#if defined(__AVX2__)
#include <immintrin.h>
#endif

/* ============================================================================
 * Low-precision state (adamkit/core/state_format.py, followed bit for bit).
 *
 * A state tensor is stored in bfloat16 (stochastic rounding) or as blockwise
 * 8-bit codes with one float32 scale per block of at most BLOCK elements
 * within a row.  The step (adamkit_step_lowp in kernel.c) never makes a float32 copy of a state tensor: each
 * span (SPAN elements: up to 4 int8 blocks of one row, or of bfloat16 state) is decoded into
 * small stack buffers, stepped by the same range function as float32 state
 * (its s0..s3 pointing at the buffers), and encoded back, in one pass.
 * ========================================================================== */

#define BLOCK 256
#define CHUNK 256
enum { KIND_SIGNED = 0, KIND_UNSIGNED = 1, KIND_UPPER = 2 };
enum { ZERO_SIGNED = 127, ZERO_UNSIGNED = 0 };

/* the generator's constants (state_format.HASH_INDEX ...) */
#define HASH_INDEX 0x27D4EB2Fu
#define HASH_MIX1 0x2C1B3C6Du
#define HASH_MIX2 0x297A2D39u
#define KEY_STEP 0x1E3779B1u
#define KEY_SLOT 0x05EBCA77u

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 15;
    x *= HASH_MIX1;
    x ^= x >> 12;
    x *= HASH_MIX2;
    x ^= x >> 15;
    return x;
}
#if defined(__AVX2__)
/* mix32 of 8 lanes at once (the same integer operations lane by lane): the bfloat16 and int8 encoders' bits */
static inline __m256i mix32_avx2(__m256i h, __m256i mix1, __m256i mix2) {
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
    h = _mm256_mullo_epi32(h, mix1);
    h = _mm256_xor_si256(h, _mm256_srli_epi32(h, 12));
    h = _mm256_mullo_epi32(h, mix2);
    return _mm256_xor_si256(h, _mm256_srli_epi32(h, 15));
}
#endif

/* state_format.stream_key: the key of one state tensor's stream at one step (uint32 wraps as the masked int64) */
static inline uint32_t stream_key(uint32_t seed, int64_t step, int32_t slot) {
    return mix32(seed + (uint32_t)step * KEY_STEP + (uint32_t)slot * KEY_SLOT);
}
static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/*
 * The 8-bit codes (state_format): magnitude code q >= 1 of a kind is the
 * float32 of bits (q + OFFSET) << 20 (sign 0, exponent, 3 mantissa bits;
 * the top code, TOP_*, reads 1.0), q = 0 is zero; signed code 127 -+ q is -+
 * the magnitude q.  Codes 254 and 255 are +inf and NaN in every kind, signed
 * code 0 is -inf: they read back as themselves whatever the block's scale,
 * which is the block's largest finite magnitude.  VALUE[kind][code] =
 * state_format.table(kind), set once by adamkit_set_tables, which checks that
 * the tables are exactly that (the coders below work from the bits).
 */
static float VALUE[3][256];
#define TOP_SIGNED 126      /* state_format.TOP_CODE */
#define TOP_UNSIGNED 253
#define OFFSET_SIGNED 890   /* state_format.OFFSET: (0x3F800000 >> 20) - TOP_SIGNED */
#define OFFSET_UNSIGNED 763 /* (0x3F800000 >> 20) - TOP_UNSIGNED */
#define CODE_POS_INF 254    /* state_format.POS_INF_CODE, NAN_CODE, NEG_INF_CODE */
#define CODE_NAN 255
#define CODE_NEG_INF 0
#define BITS_POS_INF 0x7F800000u
#define BITS_NEG_INF 0xFF800000u
#define BITS_NAN 0x7FC00000u       /* the NaN of the tables (numpy's) */
#define BF16_NAN 0x7FC0u           /* state_format.BFLOAT16_NAN_BITS */
/* float32(1 / smallest magnitude) of each kind (state_format.INV_SMALLEST) */
static float INV_SMALLEST[3];
static int tables_set = 0;

static inline uint32_t magnitude_bits(int32_t q, int32_t offset) { return q ? (uint32_t)(q + offset) << 20 : 0u; }
#if defined(__AVX2__)
/* magnitude_bits of 8 codes q (voff: OFFSET in every lane) */
static inline __m256i magnitude_bits_avx2(__m256i q, __m256i voff) {
    return _mm256_andnot_si256(_mm256_cmpeq_epi32(q, _mm256_setzero_si256()),
                               _mm256_slli_epi32(_mm256_add_epi32(q, voff), 20));
}
#endif

/*
 * Install the tables (3 x 256 float32: signed, unsigned, upper) and check
 * that they are the codes above.  Returns 0, or a negative number if not.
 */
int adamkit_set_tables(const float *tables) {
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < 256; c++) VALUE[k][c] = tables[k * 256 + c];
    for (int c = 0; c < 256; c++) {
        const uint32_t special = c == CODE_POS_INF ? BITS_POS_INF : c == CODE_NAN ? BITS_NAN : 0u;
        if (f2u(VALUE[KIND_UNSIGNED][c]) != (c <= TOP_UNSIGNED ? magnitude_bits(c, OFFSET_UNSIGNED) : special))
            return -3;
        if (f2u(VALUE[KIND_UPPER][c]) != f2u(VALUE[KIND_UNSIGNED][c])) return -1;
        const int32_t d = c - ZERO_SIGNED, q = d < 0 ? -d : d;
        const uint32_t want = c == CODE_NEG_INF ? BITS_NEG_INF : c >= CODE_POS_INF ? special
                              : magnitude_bits(q, OFFSET_SIGNED) | (d < 0 ? 0x80000000u : 0u);
        if (f2u(VALUE[KIND_SIGNED][c]) != want) return -4;
    }
    INV_SMALLEST[KIND_SIGNED] = 1.0f / VALUE[KIND_SIGNED][ZERO_SIGNED + 1];
    INV_SMALLEST[KIND_UNSIGNED] = INV_SMALLEST[KIND_UPPER] = 1.0f / VALUE[KIND_UNSIGNED][1];
    tables_set = 1;
    return 0;
}

/* ------------------------------------------------------------- bfloat16 */
static inline void bf16_decode(const uint16_t *restrict src, int64_t n, float *restrict dst) {
    for (int32_t j = 0; j < (int32_t)n; j++) dst[j] = u2f((uint32_t)src[j] << 16);
}

/*
 * state_format.encode_bfloat16 of n values whose memory positions are pos.. :
 * add 16 random bits (0xFFFF for "upper") below the kept bits and truncate;
 * a finite value that would carry into inf keeps the largest finite bfloat16
 * of its sign (not "upper"); inf stays inf, every NaN is stored as BF16_NAN.
 */
static inline void bf16_encode(const float *restrict src, int64_t n, int kind, uint32_t key, int64_t pos,
                               uint16_t *restrict dst) {
    const uint32_t base = (uint32_t)pos * HASH_INDEX + key;
    int32_t j = 0;
#if defined(__AVX2__)
    /* 16 values at a time: the same integer operations lane by lane (gcc's vectorisation of the loop below
     * keeps the kind test and the selects scalar-ish), packed to 16 bits in registers */
    const __m256i mix1 = _mm256_set1_epi32((int32_t)HASH_MIX1), mix2 = _mm256_set1_epi32((int32_t)HASH_MIX2);
    const __m256i exp_mask = _mm256_set1_epi32(0x7F800000), abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256i all16 = _mm256_set1_epi32(0xFFFF), nan16 = _mm256_set1_epi32(BF16_NAN);
    const __m256i abs16 = _mm256_set1_epi32(0x7FFF), inf16 = _mm256_set1_epi32(0x7F80);
    const __m256i step8 = _mm256_set1_epi32((int32_t)(8u * HASH_INDEX));
    const int upper = kind == KIND_UPPER;
    __m256i counter = _mm256_add_epi32(_mm256_set1_epi32((int32_t)base),
                                       _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                          _mm256_set1_epi32((int32_t)HASH_INDEX)));
    for (; j + 16 <= (int32_t)n; j += 16) {
        __m256i half[2];
        for (int q = 0; q < 2; q++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(src + j + 8 * q));
            __m256i noise = all16;
            if (!upper) {
                noise = _mm256_srli_epi32(mix32_avx2(counter, mix1, mix2), 16);
            }
            counter = _mm256_add_epi32(counter, step8);
            __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(b, noise), 16);
            if (!upper) /* a carry into inf: the largest finite bfloat16 of its sign (inf - 1) */
                rounded = _mm256_add_epi32(rounded, _mm256_cmpeq_epi32(_mm256_and_si256(rounded, abs16), inf16));
            const __m256i nonfinite = _mm256_cmpeq_epi32(_mm256_and_si256(b, exp_mask), exp_mask);
            const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(b, abs_mask), exp_mask);
            const __m256i special = _mm256_blendv_epi8(_mm256_srli_epi32(b, 16), nan16, nan);
            half[q] = _mm256_blendv_epi8(rounded, special, nonfinite);
        }
        /* 0..0xFFFF in each lane: packus keeps them; the permute undoes its per-128-bit-lane order */
        const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(half[0], half[1]), 0xD8);
        _mm256_storeu_si256((__m256i *)(dst + j), w);
    }
#endif
    for (; j < (int32_t)n; j++) {
        const uint32_t b = f2u(src[j]);
        const uint32_t noise = kind == KIND_UPPER ? 0xFFFFu : mix32(base + (uint32_t)j * HASH_INDEX) >> 16;
        uint32_t r = (b + noise) >> 16;
        if (kind != KIND_UPPER && (r & 0x7FFFu) == 0x7F80u) r -= 1; /* a carry into inf */
        const int finite = (b & 0x7F800000u) != 0x7F800000u;
        const int nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
        dst[j] = (uint16_t)(finite ? r : nan ? BF16_NAN : (b >> 16));
    }
}

/* ------------------------------------------------------- parameters */
#define PARAM_SLOT 32              /* state_format.PARAM_SLOT: the parameters' stream slot */
#define F16_MAX_BITS 0x477FE000u   /* state_format.FLOAT16_MAX_BITS: 65504 */
#define F16_NORMAL_BITS 0x38800000u /* state_format.FLOAT16_NORMAL_BITS: 2**-14 */

/*
 * state_format.round_param_bits: n float32 values at memory positions pos..
 * rounded stochastically to the parameter dtype. bfloat16: bf16_encode's
 * "signed" rounding. float16: 13 random bits below the kept ones from 2**-14
 * up (a finite value keeps float16's largest finite); below, in units of
 * 2**-24, the integer part rounded up when the 32 random bits are below the
 * remainder scaled to 2**32; inf stays, NaN becomes 0x7E00.
 */
static void param_round(const float *restrict src, int64_t n, int dtype, uint32_t key, int64_t pos, void *dst) {
    if (dtype == DT_BF16) {
        bf16_encode(src, n, KIND_SIGNED, key, pos, (uint16_t *)dst);
        return;
    }
    uint16_t *restrict out = dst;
    const uint32_t base = (uint32_t)pos * HASH_INDEX + key;
    for (int32_t j = 0; j < (int32_t)n; j++) {
        const uint32_t b = f2u(src[j]), mag = b & 0x7FFFFFFFu, r = mix32(base + (uint32_t)j * HASH_INDEX);
        uint32_t h;
        if (mag >= 0x7F800000u) {
            h = mag > 0x7F800000u ? 0x7E00u : 0x7C00u;
        } else if (mag >= F16_NORMAL_BITS) {
            uint32_t m = (mag + (r >> 19)) & ~0x1FFFu;
            if (m > F16_MAX_BITS) m = F16_MAX_BITS;
            h = (m - 0x38000000u) >> 13;
        } else {
            const int32_t e = (int32_t)(mag >> 23);
            const uint64_t mant = (mag & 0x7FFFFFu) | (e ? 0x800000u : 0u);
            const int32_t shift = 126 - (e > 1 ? e : 1), sh = shift < 63 ? shift : 63;
            const uint64_t whole = mant >> sh, rem = mant - (whole << sh);
            h = (uint32_t)whole + ((uint64_t)r < ((rem << 32) >> sh));
        }
        if (mag <= 0x7F800000u) h |= (b >> 16) & 0x8000u;
        out[j] = (uint16_t)h;
    }
}


/* ----------------------------------------------------------------- int8 */
/* dst = VALUE[kind][code] * scale, from the code's bits (8 at a time with AVX2); +-inf and NaN as they are */
static inline void int8_decode(const uint8_t *restrict codes, int64_t n, int kind, float scale,
                               float *restrict dst) {
    int32_t j = 0;
#if defined(__AVX2__)
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i c_pos_inf = _mm256_set1_epi32(CODE_POS_INF), c_nan = _mm256_set1_epi32(CODE_NAN);
    const __m256i pos_inf = _mm256_set1_epi32((int32_t)BITS_POS_INF), qnan = _mm256_set1_epi32((int32_t)BITS_NAN);
    if (kind == KIND_SIGNED) {
        const __m256i c127 = _mm256_set1_epi32(ZERO_SIGNED), off = _mm256_set1_epi32(OFFSET_SIGNED);
        const __m256i sign = _mm256_set1_epi32((int32_t)0x80000000u), zero = _mm256_setzero_si256();
        const __m256i neg_inf = _mm256_set1_epi32((int32_t)BITS_NEG_INF);
        for (; j + 8 <= (int32_t)n; j += 8) {
            const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
            const __m256i d = _mm256_sub_epi32(c, c127), q = _mm256_abs_epi32(d);
            const __m256i bits = _mm256_or_si256(magnitude_bits_avx2(q, off), _mm256_and_si256(d, sign));
            __m256i v = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(bits), vscale));
            v = _mm256_blendv_epi8(v, neg_inf, _mm256_cmpeq_epi32(c, zero));
            v = _mm256_blendv_epi8(v, pos_inf, _mm256_cmpeq_epi32(c, c_pos_inf));
            v = _mm256_blendv_epi8(v, qnan, _mm256_cmpeq_epi32(c, c_nan));
            _mm256_storeu_si256((__m256i *)(dst + j), v);
        }
    } else {
        const __m256i off = _mm256_set1_epi32(OFFSET_UNSIGNED);
        for (; j + 8 <= (int32_t)n; j += 8) {
            const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codes + j)));
            __m256i v = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(magnitude_bits_avx2(c, off)), vscale));
            v = _mm256_blendv_epi8(v, pos_inf, _mm256_cmpeq_epi32(c, c_pos_inf));
            v = _mm256_blendv_epi8(v, qnan, _mm256_cmpeq_epi32(c, c_nan));
            _mm256_storeu_si256((__m256i *)(dst + j), v);
        }
    }
#endif
    const float *restrict value = VALUE[kind];
    for (; j < (int32_t)n; j++) {
        const float v = value[codes[j]];
        dst[j] = (f2u(v) & 0x7F800000u) != 0x7F800000u ? v * scale : v; /* inf * 0 would be NaN */
    }
}

/*
 * state_format.quantize_int8 of one block of n values (memory positions pos..):
 * the scale is the block's largest finite magnitude; +-inf and NaN take their
 * own codes (a second pass, only in a block that holds one); each finite
 * value's ratio r = x / scale, with b
 * the bits of |r| and u the top 20 of the element's random bits, gets the
 * magnitude code ((b + u) >> 20) - OFFSET at or above the smallest magnitude
 * and, below it, 1 if u * 2**-20 < |r| * INV_SMALLEST, else 0 ("signed",
 * "unsigned"); "upper" scales by the smallest power of two >= the largest
 * value and takes the smallest code whose value times the scale is >= x.
 * Non-signed kinds store negative values as zero.
 */
#if defined(__AVX2__)
/* 32 codes (as int32 in 4 vectors; a non-finite value's may be out of 0..255: its code is set afterwards) to bytes:
 * packs work within 128-bit lanes, the permute puts them in order */
static inline void store32_codes(const __m256i out[4], uint8_t *restrict dst) {
    const __m256i w = _mm256_packus_epi16(_mm256_packus_epi32(out[0], out[1]), _mm256_packus_epi32(out[2], out[3]));
    _mm256_storeu_si256((__m256i *)dst, _mm256_permutevar8x32_epi32(w, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/*
 * The stochastic rounding of int8_encode, 8 elements at a time with AVX2: the
 * same integer and IEEE float operations lane by lane, so the same codes.
 * Returns how many leading elements it did (a multiple of 32); the portable
 * loop does the rest.
 */
static inline int32_t sr_avx2(const float *restrict x, int32_t n, float safe, int is_signed, int32_t offset,
                              float inv_smallest, uint32_t base, uint8_t *restrict codes) {
    const __m256 vsafe = _mm256_set1_ps(safe), vinv = _mm256_set1_ps(inv_smallest);
    const __m256 u_unit = _mm256_set1_ps(0x1p-20f);
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), voff = _mm256_set1_epi32(offset);
    const __m256i low_limit = _mm256_set1_epi32((int32_t)((uint32_t)(offset + 1) << 20));
    const __m256i mix1 = _mm256_set1_epi32((int32_t)HASH_MIX1), mix2 = _mm256_set1_epi32((int32_t)HASH_MIX2);
    const __m256i zero_code = _mm256_set1_epi32(ZERO_SIGNED), zero = _mm256_setzero_si256();
    const __m256i step8 = _mm256_set1_epi32((int32_t)(8u * HASH_INDEX));
    __m256i counter = _mm256_add_epi32(_mm256_set1_epi32((int32_t)base),
                                       _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                          _mm256_set1_epi32((int32_t)HASH_INDEX)));
    int32_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m256i out[4];
        for (int q = 0; q < 4; q++) {
            const __m256i rbits = _mm256_castps_si256(_mm256_div_ps(_mm256_loadu_ps(x + j + 8 * q), vsafe));
            const __m256i b = _mm256_and_si256(rbits, abs_mask);
            /* the element's random bits: mix32(i * HASH_INDEX + key), their top 20 */
            const __m256i noise = _mm256_srli_epi32(mix32_avx2(counter, mix1, mix2), 12);
            counter = _mm256_add_epi32(counter, step8);
            __m256i level = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_add_epi32(b, noise), 20), voff);
            /* below the smallest magnitude: 1 with probability |r| / smallest (u < p compared on the bits of
             * two floats >= +0, as the portable loop) */
            const __m256i low = _mm256_cmpgt_epi32(low_limit, b);
            const __m256i p = _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(b), vinv));
            const __m256i u = _mm256_castps_si256(_mm256_mul_ps(_mm256_cvtepi32_ps(noise), u_unit));
            level = _mm256_blendv_epi8(level, _mm256_sub_epi32(zero, _mm256_cmpgt_epi32(p, u)), low);
            if (is_signed) { /* 127 - level for r < 0 (its sign bit) */
                const __m256i neg = _mm256_srai_epi32(rbits, 31);
                out[q] = _mm256_add_epi32(zero_code, _mm256_sub_epi32(_mm256_xor_si256(level, neg), neg));
            } else {
                out[q] = level;
            }
        }
        store32_codes(out, codes + j);
    }
    return j;
}

/* The "upper" rounding of int8_encode (x >= 0 or -0 here), 8 elements at a time: as the portable loop. */
static inline int32_t upper_avx2(const float *restrict x, int32_t n, float safe, uint8_t *restrict codes) {
    const __m256 vsafe = _mm256_set1_ps(safe);
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), voff = _mm256_set1_epi32(OFFSET_UNSIGNED);
    const __m256i low_limit = _mm256_set1_epi32((int32_t)((uint32_t)(OFFSET_UNSIGNED + 1) << 20));
    const __m256i top = _mm256_set1_epi32(TOP_UNSIGNED);
    int32_t j = 0;
    for (; j + 32 <= n; j += 32) {
        __m256i out[4];
        for (int q = 0; q < 4; q++) {
            const __m256 value = _mm256_loadu_ps(x + j + 8 * q);
            const __m256i vbits = _mm256_castps_si256(value); /* -0: INT32_MIN, below everything */
            const __m256i b = _mm256_and_si256(_mm256_castps_si256(_mm256_div_ps(value, vsafe)), abs_mask);
            /* the largest code <= |r|: 0 below the smallest magnitude */
            const __m256i lo = _mm256_andnot_si256(_mm256_cmpgt_epi32(low_limit, b),
                                                   _mm256_sub_epi32(_mm256_srli_epi32(b, 20), voff));
            const __m256i lo_value =
                _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(magnitude_bits_avx2(lo, voff)), vsafe));
            const __m256i up = _mm256_and_si256(_mm256_cmpgt_epi32(vbits, lo_value), _mm256_cmpgt_epi32(top, lo));
            const __m256i level = _mm256_sub_epi32(lo, up);
            /* float rounding of code * scale must not land below the value itself (level >= 1 here or value 0) */
            const __m256i level_value =
                _mm256_castps_si256(_mm256_mul_ps(_mm256_castsi256_ps(magnitude_bits_avx2(level, voff)), vsafe));
            const __m256i below = _mm256_and_si256(_mm256_cmpgt_epi32(vbits, level_value),
                                                   _mm256_cmpgt_epi32(top, level));
            out[q] = _mm256_sub_epi32(level, below);
        }
        store32_codes(out, codes + j);
    }
    return j;
}

/* the largest |x| of n values as bits (NaN above inf); non-signed kinds first clamp x at 0 (NaN stays) */
static inline uint32_t absmax_avx2(float *restrict x, int32_t n, int clamp, int32_t *done) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
    const __m256 zero = _mm256_setzero_ps();
    __m256i m0 = _mm256_setzero_si256(), m1 = m0;
    int32_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
        if (clamp) { /* x < 0 ? 0 : x */
            a = _mm256_blendv_ps(a, zero, _mm256_cmp_ps(a, zero, _CMP_LT_OQ));
            b = _mm256_blendv_ps(b, zero, _mm256_cmp_ps(b, zero, _CMP_LT_OQ));
            _mm256_storeu_ps(x + j, a);
            _mm256_storeu_ps(x + j + 8, b);
        }
        m0 = _mm256_max_epu32(m0, _mm256_and_si256(_mm256_castps_si256(a), abs_mask));
        m1 = _mm256_max_epu32(m1, _mm256_and_si256(_mm256_castps_si256(b), abs_mask));
    }
    m0 = _mm256_max_epu32(m0, m1);
    __m128i m = _mm_max_epu32(_mm256_castsi256_si128(m0), _mm256_extracti128_si256(m0, 1));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4E));
    m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xB1));
    *done = j;
    return (uint32_t)_mm_cvtsi128_si32(m);
}
#else
static inline int32_t sr_avx2(const float *restrict x, int32_t n, float safe, int is_signed, int32_t offset,
                              float inv_smallest, uint32_t base, uint8_t *restrict codes) {
    (void)x; (void)n; (void)safe; (void)is_signed; (void)offset; (void)inv_smallest; (void)base; (void)codes;
    return 0;
}
static inline uint32_t absmax_avx2(float *restrict x, int32_t n, int clamp, int32_t *done) {
    (void)x; (void)n; (void)clamp;
    *done = 0;
    return 0;
}
static inline int32_t upper_avx2(const float *restrict x, int32_t n, float safe, uint8_t *restrict codes) {
    (void)x; (void)n; (void)safe; (void)codes;
    return 0;
}
#endif

static inline void int8_encode(float *restrict x, int64_t n, int kind, uint32_t key, int64_t pos,
                               uint8_t *restrict codes, float *restrict scale_out) {
    /* Comparisons of floats known to be >= +0 (or -0) and finite are made on their bits as int32, which
     * orders them alike: float compares would keep gcc from vectorising these loops (-ftrapping-math). */
    int32_t head;
    uint32_t amax = absmax_avx2(x, (int32_t)n, kind != KIND_SIGNED, &head);
    if (kind != KIND_SIGNED)
        for (int32_t j = head; j < (int32_t)n; j++) x[j] = CLAMP_MIN(x[j], 0.0f);
    for (int32_t j = head; j < (int32_t)n; j++) {
        const uint32_t a = f2u(x[j]) & 0x7FFFFFFFu; /* |x|: its bits order like its value, NaN above inf */
        amax = a > amax ? a : amax;
    }
    const int is_signed = kind == KIND_SIGNED;
    const int special = amax >= 0x7F800000u; /* an inf or a NaN in the block: the scale is the largest finite |x| */
    if (special) {
        amax = 0;
        for (int32_t j = 0; j < (int32_t)n; j++) {
            const uint32_t a = f2u(x[j]) & 0x7FFFFFFFu;
            amax = a < 0x7F800000u && a > amax ? a : amax;
        }
    }
    if (kind == KIND_UPPER && amax) { /* the smallest power of two >= the largest value (unless it overflows) */
        const uint32_t p2 = (amax + 0x7FFFFFu) & 0x7F800000u;
        if (p2 < 0x7F800000u) amax = p2;
    }
    *scale_out = u2f(amax);
    const float safe = amax ? u2f(amax) : 1.0f;
    const int32_t offset = is_signed ? OFFSET_SIGNED : OFFSET_UNSIGNED;
    const uint32_t low_limit = (uint32_t)(offset + 1) << 20; /* the bits of the smallest magnitude */
    if (kind == KIND_UPPER) {
        for (int32_t j = upper_avx2(x, (int32_t)n, safe, codes); j < (int32_t)n; j++) {
            const float value = x[j];
            const int32_t vbits = (int32_t)f2u(value); /* value >= 0 or -0 (INT32_MIN: below everything) */
            const uint32_t b = f2u(value / safe) & 0x7FFFFFFFu;
            const int32_t lo = b < low_limit ? 0 : (int32_t)(b >> 20) - offset; /* the largest code <= |r| */
            const int32_t up = ((int32_t)f2u(u2f(magnitude_bits(lo, offset)) * safe) < vbits) & (lo < TOP_UNSIGNED);
            /* float rounding of code * scale must not land below the value itself */
            const int32_t below =
                ((int32_t)f2u(u2f(magnitude_bits(lo + up, offset)) * safe) < vbits) & (lo + up < TOP_UNSIGNED);
            codes[j] = (uint8_t)(lo + up + below);
        }
    } else {
        const uint32_t base = (uint32_t)pos * HASH_INDEX + key;
        const float inv = INV_SMALLEST[kind];
        for (int32_t j = sr_avx2(x, (int32_t)n, safe, is_signed, offset, inv, base, codes); j < (int32_t)n; j++) {
            const uint32_t rbits = f2u(x[j] / safe), b = rbits & 0x7FFFFFFFu;
            const uint32_t noise = mix32(base + (uint32_t)j * HASH_INDEX) >> 12;
            int32_t level = (int32_t)((b + noise) >> 20) - offset;
            if (b < low_limit) { /* u < p, both >= +0 */
                const float p = u2f(b) * inv, u = (float)(int32_t)noise * 0x1p-20f;
                level = (int32_t)f2u(u) < (int32_t)f2u(p);
            }
            codes[j] = (uint8_t)(is_signed ? ((rbits >> 31) ? ZERO_SIGNED - level : ZERO_SIGNED + level) : level);
        }
    }
    if (special) /* the codes of the non-finite values (the loops above gave them arbitrary ones) */
        for (int32_t j = 0; j < (int32_t)n; j++) {
            const uint32_t b = f2u(x[j]), a = b & 0x7FFFFFFFu;
            if (a >= 0x7F800000u) codes[j] = a > 0x7F800000u ? CODE_NAN : (b >> 31) ? CODE_NEG_INF : CODE_POS_INF;
        }
}

/*
 * Encode a float32 tensor (rows x row elements in memory order; x is
 * overwritten by the clamp of non-signed kinds) in one format, as the
 * reference: format 0 bfloat16 (out: uint16), 1 int8 (out: uint8 codes, and
 * scales: rows x ceil(row / BLOCK) float32).  For the tests: the kernel's
 * rounding of given float32 values.
 */
int adamkit_encode(int format, int kind, int64_t rows, int64_t row, float *x, void *out, float *scales,
                   uint32_t key) {
    if (!tables_set || kind < 0 || kind > 2 || rows < 0 || row < 0) return -1;
    if (format == 0) {
        for (int64_t start = 0; start < rows * row; start += CHUNK) {
            const int64_t len = rows * row - start < CHUNK ? rows * row - start : CHUNK;
            bf16_encode(x + start, len, kind, key, start, (uint16_t *)out + start);
        }
        return 0;
    }
    if (format != 1) return -1;
    const int64_t nb = row > 0 ? (row + BLOCK - 1) / BLOCK : 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t start = r * row + b * BLOCK;
            int64_t len = row - b * BLOCK;
            if (len > BLOCK) len = BLOCK;
            if (len <= 0) { scales[r * nb + b] = 0.0f; continue; }
            int8_encode(x + start, len, kind, key, start, (uint8_t *)out + start, scales + r * nb + b);
        }
    return 0;
}

/* The float32 values of int8 codes (rows x row, scales rows x ceil(row / BLOCK)), as the step decodes them. */
int adamkit_decode(int kind, int64_t rows, int64_t row, const uint8_t *codes, const float *scales, float *out) {
    if (!tables_set || kind < 0 || kind > 2 || rows < 0 || row < 0) return -1;
    const int64_t nb = row > 0 ? (row + BLOCK - 1) / BLOCK : 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b * BLOCK < row; b++) {
            const int64_t start = r * row + b * BLOCK, len = row - b * BLOCK < BLOCK ? row - b * BLOCK : BLOCK;
            int8_decode(codes + start, len, kind, scales[r * nb + b], out + start);
        }
    return 0;
}
