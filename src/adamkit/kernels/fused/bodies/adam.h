/*
 * Adam (AdamW and AMSGrad share it): the loop body ADAM_BODY and the range function RANGE_adam of the fused
 * kernel (kernel.c includes this file through the generated list; see its comment on the bodies).
 * The math is the element-wise `update` of adamkit/optim/adam.py,
 * in the same order of operations.
 */
#define ADAM_BODY(amsgrad, decoupled_decay, coupled_decay)                   \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (decoupled_decay) p = p * decay_factor;                           \
        if (coupled_decay) g = g + p * coupled_wd;                           \
        M m = LERP(s0[i], g, one_minus_beta1);                               \
        M v = s1[i] * beta2 + (g * g) * one_minus_beta2;                     \
        s0[i] = m;                                                           \
        s1[i] = v;                                                           \
        M second = v;                                                        \
        if (amsgrad) {                                                       \
            second = NANMAX(s2[i], v);                                       \
            s2[i] = second;                                                  \
        }                                                                    \
        M denom = sqrt(second) / sqrt_bc2 + eps;                             \
        ST(i, p - (m / denom) * step_size);                                  \
    }

#define RANGE_adam(SUFFIX, PT, ST_T, MT)                                                               \
    RANGE_HEAD(adam, SUFFIX, PT, ST_T, MT)                                                             \
        const M one_minus_beta1 = (M)(1.0 - sc[S_adam_beta1]), beta2 = (M)sc[S_adam_beta2];           \
        const M one_minus_beta2 = (M)(1.0 - sc[S_adam_beta2]), eps = (M)sc[S_adam_eps];              \
        const M decay_factor = (M)sc[S_adam_decay_factor], coupled_wd = (M)sc[S_adam_coupled_decay];  \
        const M step_size = (M)sc[S_adam_step_size], sqrt_bc2 = (M)sc[S_adam_sqrt_bc2];               \
        const int ams = FLAG(flags, F_adam_amsgrad), dec = FLAG(flags, F_adam_decoupled_decay);       \
        const int cpl = FLAG(flags, F_adam_coupled_decay);                                            \
        if (ams) {                                                                                     \
            if (dec) { B2(cpl, ADAM_BODY, 1, 1, ) } else { B2(cpl, ADAM_BODY, 1, 0, ) }               \
        } else {                                                                                       \
            if (dec) { B2(cpl, ADAM_BODY, 0, 1, ) } else { B2(cpl, ADAM_BODY, 0, 0, ) }               \
        }                                                                                              \
    }
