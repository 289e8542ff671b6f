/*
 * AdaBelief: the loop body ADABELIEF_BODY and the range function RANGE_adabelief of the fused
 * kernel (kernel.c includes this file through the generated list; see its comment on the bodies).
 * The math is the element-wise `update` of adamkit/optim/adabelief.py,
 * in the same order of operations.
 */
#define ADABELIEF_BODY(amsgrad, decoupled_decay, coupled_decay, mode, rectified_amsgrad) \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (decoupled_decay) p = p * decay_factor;                           \
        if (coupled_decay) g = g + p * coupled_wd;                           \
        M m = s0[i] * beta1 + g * one_minus_beta1;                           \
        M r = g - m;                                                         \
        M s = s1[i] * beta2 + (r * r) * one_minus_beta2 + eps;               \
        s0[i] = m;                                                           \
        s1[i] = s;                                                           \
        M second = s;                                                        \
        if (amsgrad) {                                                       \
            second = NANMAX(s2[i], s);                                       \
            s2[i] = second;                                                  \
        }                                                                    \
        if (mode == adabelief_mode_ADAPTIVE)                                 \
            p = p - (m / (sqrt(second) / sqrt_bc2 + eps)) * step_size;       \
        else if (mode == adabelief_mode_RECTIFIED)                           \
            p = p - (m / (sqrt(rectified_amsgrad ? second : s) + eps)) * rectified_step; \
        else if (mode == adabelief_mode_SGD)                                 \
            p = p - m * sgd_step;                                            \
        ST(i, p);                                                            \
    }

#define RANGE_adabelief(SUFFIX, PT, ST_T, MT)                                                          \
    RANGE_HEAD(adabelief, SUFFIX, PT, ST_T, MT)                                                        \
        const M beta1 = (M)sc[S_adabelief_beta1], one_minus_beta1 = (M)(1.0 - sc[S_adabelief_beta1]); \
        const M beta2 = (M)sc[S_adabelief_beta2], one_minus_beta2 = (M)(1.0 - sc[S_adabelief_beta2]); \
        const M eps = (M)sc[S_adabelief_eps], decay_factor = (M)sc[S_adabelief_decay_factor];         \
        const M coupled_wd = (M)sc[S_adabelief_coupled_decay], step_size = (M)sc[S_adabelief_step_size]; \
        const M sgd_step = (M)sc[S_adabelief_sgd_step], rectified_step = (M)sc[S_adabelief_rectified_step]; \
        const M sqrt_bc2 = (M)sc[S_adabelief_sqrt_bc2];                                               \
        const int ams = FLAG(flags, F_adabelief_amsgrad), dec = FLAG(flags, F_adabelief_decoupled_decay); \
        const int cpl = FLAG(flags, F_adabelief_coupled_decay), mode = FLAG(flags, F_adabelief_mode);  \
        const int rams = FLAG(flags, F_adabelief_rectified_amsgrad);                                   \
        /* the decay flags are cheap; the costly choices (mode, amsgrad) are specialised */            \
        if (mode == adabelief_mode_ADAPTIVE) {                                                         \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, adabelief_mode_ADAPTIVE, 0) }                       \
            else { ADABELIEF_BODY(0, dec, cpl, adabelief_mode_ADAPTIVE, 0) }                           \
        } else if (mode == adabelief_mode_RECTIFIED) {                                                 \
            if (ams) {                                                                                 \
                if (rams) { ADABELIEF_BODY(1, dec, cpl, adabelief_mode_RECTIFIED, 1) }                 \
                else { ADABELIEF_BODY(1, dec, cpl, adabelief_mode_RECTIFIED, 0) }                      \
            } else { ADABELIEF_BODY(0, dec, cpl, adabelief_mode_RECTIFIED, 0) }                        \
        } else if (mode == adabelief_mode_SGD) {                                                       \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, adabelief_mode_SGD, 0) }                            \
            else { ADABELIEF_BODY(0, dec, cpl, adabelief_mode_SGD, 0) }                                \
        } else {                                                                                       \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, adabelief_mode_NONE, 0) }                           \
            else { ADABELIEF_BODY(0, dec, cpl, adabelief_mode_NONE, 0) }                               \
        }                                                                                              \
    }
