/*
 * EAdam: the loop body EADAM_BODY and the range function RANGE_eadam of the fused
 * kernel (kernel.c includes this file through the generated list; see its comment on the bodies).
 * The math is the element-wise `update` of adamkit/optim/eadam.py,
 * in the same order of operations.
 */
#define EADAM_BODY(amsgrad, coupled_decay)                                   \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (coupled_decay) g = g + p * coupled_wd;                           \
        M m = s0[i] * beta1 + g * one_minus_beta1;                           \
        M v = s1[i] * beta2 + (g * g) * one_minus_beta2;                     \
        s0[i] = m;                                                           \
        M denom;                                                             \
        if (amsgrad) {                                                       \
            s1[i] = v;                                                       \
            M mx = NANMAX(s2[i], v);                                         \
            s2[i] = mx;                                                      \
            denom = sqrt(mx) + eps;                                          \
        } else {                                                             \
            v = v + eps;                                                     \
            s1[i] = v;                                                       \
            denom = sqrt(v);                                                 \
        }                                                                    \
        ST(i, p - (m / denom) * step_size);                                  \
    }

#define RANGE_eadam(SUFFIX, PT, ST_T, MT)                                                              \
    RANGE_HEAD(eadam, SUFFIX, PT, ST_T, MT)                                                            \
        const M beta1 = (M)sc[S_eadam_beta1], one_minus_beta1 = (M)(1.0 - sc[S_eadam_beta1]);         \
        const M beta2 = (M)sc[S_eadam_beta2], one_minus_beta2 = (M)(1.0 - sc[S_eadam_beta2]);         \
        const M eps = (M)sc[S_eadam_eps], coupled_wd = (M)sc[S_eadam_coupled_decay];                  \
        const M step_size = (M)sc[S_eadam_step_size];                                                 \
        const int ams = FLAG(flags, F_eadam_amsgrad), cpl = FLAG(flags, F_eadam_coupled_decay);       \
        if (ams) { B2(cpl, EADAM_BODY, 1, ) } else { B2(cpl, EADAM_BODY, 0, ) }                       \
    }
