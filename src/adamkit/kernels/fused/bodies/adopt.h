/*
 * ADOPT: the loop body ADOPT_BODY and the range function RANGE_adopt of the fused
 * kernel (kernel.c includes this file through the generated list; see its comment on the bodies).
 * The math is the element-wise `update` of adamkit/optim/adopt.py,
 * in the same order of operations.
 */
#define ADOPT_BODY(first_step, coupled_decay, decoupled_decay, clip)         \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (coupled_decay) g = g + p * coupled_wd;                           \
        if (first_step) {                                                    \
            s1[i] = s1[i] + g * g;                                           \
        } else {                                                             \
            M v = s1[i];                                                     \
            if (decoupled_decay) p = p - p * decoupled_wd;                   \
            M normed = g / CLAMP_MIN(sqrt(v), eps);                          \
            if (clip) { normed = CLAMP_MIN(normed, -clip_at); normed = CLAMP_MAX(normed, clip_at); } \
            M m = LERP(s0[i], normed, one_minus_beta1);                      \
            s0[i] = m;                                                       \
            ST(i, p - m * lr);                                               \
            s1[i] = v * beta2 + (g * g) * one_minus_beta2;                   \
        }                                                                    \
    }

#define RANGE_adopt(SUFFIX, PT, ST_T, MT)                                                              \
    RANGE_HEAD(adopt, SUFFIX, PT, ST_T, MT)                                                            \
        const M one_minus_beta1 = (M)(1.0 - sc[S_adopt_beta1]), beta2 = (M)sc[S_adopt_beta2];         \
        const M one_minus_beta2 = (M)(1.0 - sc[S_adopt_beta2]), eps = (M)sc[S_adopt_eps];            \
        const M lr = (M)sc[S_adopt_lr], coupled_wd = (M)sc[S_adopt_coupled_decay];                    \
        const M decoupled_wd = (M)sc[S_adopt_decoupled_decay], clip_at = (M)sc[S_adopt_clip];         \
        const int cpl = FLAG(flags, F_adopt_coupled_decay), dcpl = FLAG(flags, F_adopt_decoupled_decay); \
        const int clp = FLAG(flags, F_adopt_clip);                                                     \
        if (FLAG(flags, F_adopt_first_step)) {                                                         \
            if (cpl) { ADOPT_BODY(1, 1, 0, 0) } else { ADOPT_BODY(1, 0, 0, 0) }                       \
        } else if (clp) {                                                                              \
            if (dcpl) { ADOPT_BODY(0, cpl, 1, 1) } else { ADOPT_BODY(0, cpl, 0, 1) }                  \
        } else {                                                                                       \
            if (dcpl) { ADOPT_BODY(0, cpl, 1, 0) } else { ADOPT_BODY(0, cpl, 0, 0) }                  \
        }                                                                                              \
    }
