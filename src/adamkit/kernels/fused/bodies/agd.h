/*
 * AGD: the loop body AGD_BODY and the range function RANGE_agd of the fused
 * kernel (kernel.c includes this file through the generated list; see its comment on the bodies).
 * The math is the element-wise `update` of adamkit/optim/agd.py,
 * in the same order of operations.
 */
#define AGD_BODY(first_step, amsgrad, decoupled_decay, coupled_decay, clip, win) \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (decoupled_decay) p = p * decay_factor;                           \
        if (coupled_decay) g = g + p * coupled_wd;                           \
        M prev = s0[i];                                                      \
        M m = prev * beta1 + g * one_minus_beta1;                            \
        s0[i] = m;                                                           \
        M diff = m / bc1;                                                    \
        if (!(first_step)) diff = diff - prev / bc1_prev;                    \
        M s = s1[i] * beta2 + (diff * diff) * one_minus_beta2;               \
        s1[i] = s;                                                           \
        M second = s;                                                        \
        if (amsgrad) {                                                       \
            second = NANMAX(s2[i], s);                                       \
            s2[i] = second;                                                  \
        }                                                                    \
        M q = m / CLAMP_MIN(sqrt(second), floor_);                           \
        if (clip) { q = CLAMP_MIN(q, -clip_at); q = CLAMP_MAX(q, clip_at); } \
        if (!(win)) {                                                        \
            p = p - q * lr_adjust;                                           \
        } else {                                                             \
            M z = (s3[i] - q * lr_adjust) * z_factor;                        \
            s3[i] = z;                                                       \
            p = p * tau - q * win_step + z * win_z_weight;                   \
        }                                                                    \
        ST(i, p);                                                            \
    }

#define RANGE_agd(SUFFIX, PT, ST_T, MT)                                                                \
    RANGE_HEAD(agd, SUFFIX, PT, ST_T, MT)                                                              \
        const M beta1 = (M)sc[S_agd_beta1], one_minus_beta1 = (M)(1.0 - sc[S_agd_beta1]);             \
        const M beta2 = (M)sc[S_agd_beta2], one_minus_beta2 = (M)(1.0 - sc[S_agd_beta2]);             \
        const M bc1 = (M)sc[S_agd_bc1], bc1_prev = (M)sc[S_agd_bc1_prev];                             \
        const M decay_factor = (M)sc[S_agd_decay_factor], coupled_wd = (M)sc[S_agd_coupled_decay];    \
        const M floor_ = (M)sc[S_agd_floor], clip_at = (M)sc[S_agd_clip], lr_adjust = (M)sc[S_agd_lr_adjust]; \
        const M z_factor = (M)sc[S_agd_z_factor], tau = (M)sc[S_agd_tau];                             \
        const M win_step = (M)sc[S_agd_win_step], win_z_weight = (M)sc[S_agd_win_z_weight];           \
        const int first = FLAG(flags, F_agd_first_step), ams = FLAG(flags, F_agd_amsgrad);            \
        const int dec = FLAG(flags, F_agd_decoupled_decay), cpl = FLAG(flags, F_agd_coupled_decay);   \
        const int clp = FLAG(flags, F_agd_clip), win = FLAG(flags, F_agd_win);                         \
        if (win) {                                                                                     \
            if (ams) { AGD_BODY(first, 1, 0, 0, clp, 1) } else { AGD_BODY(first, 0, 0, 0, clp, 1) }   \
        } else if (ams) {                                                                              \
            AGD_BODY(first, 1, dec, cpl, clp, 0)                                                       \
        } else if (first) {                                                                            \
            AGD_BODY(1, 0, dec, cpl, clp, 0)                                                           \
        } else if (clp) {                                                                              \
            AGD_BODY(0, 0, dec, cpl, 1, 0)                                                             \
        } else {                                                                                       \
            AGD_BODY(0, 0, dec, cpl, 0, 0)                                                             \
        }                                                                                              \
    }
