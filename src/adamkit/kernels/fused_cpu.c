/*
 * adamkit's fused CPU kernels: one pass over memory per tensor, vectorised and
 * parallel over the elements of all the tensors of one call.
 *
 * Plain C (no torch headers), compiled once on first use by
 * adamkit/kernels/fused_cpu.py and loaded with ctypes.  One call covers every
 * tensor of a bucket (same device, dtype and step): the caller passes arrays of
 * data pointers and element counts; the total element range is split evenly
 * over the threads, so 2,000 small tensors cost one dispatch.
 *
 * The math of every algorithm is the element-wise update of its module in
 * adamkit/optim (the reference, `update`), in the same order of operations,
 * with the per-step scalars computed in double precision by `coefficients`.
 * Elements are computed in double for float64 tensors and in float for the
 * others (float32, and float16 / bfloat16 whose state is float32).  Must be
 * built without -ffast-math: NaN and Inf propagate as in the reference.
 */
#include <tgmath.h> /* sqrt is sqrtf on float: float math stays float */
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* parameter dtypes */
enum { DT_F32 = 0, DT_F64 = 1, DT_F16 = 2, DT_BF16 = 3 };
/* algorithms */
enum { ALG_ADAM = 0, ALG_EADAM = 1, ALG_ADABELIEF = 2, ALG_ADOPT = 3, ALG_AGD = 4 };
/* flags */
#define F_MAXIMIZE 1
#define F_AMSGRAD 2
#define F_DECAY 4        /* multiply θ by decay_factor */
#define F_COUPLED 8      /* g += λ·θ */
#define F_CLIP 16        /* clamp */
#define F_INIT 32        /* ADOPT's initialising call / AGD's first step */
#define F_WIN 64         /* AGD win */
#define F_RECT_AMS 128   /* AdaBelief rectified_amsgrad */
#define F_DECOUPLED 256  /* ADOPT decoupled decay */
/* AdaBelief modes, in bits 12.. */
#define MODE_SHIFT 12
enum { MODE_ADAPTIVE = 0, MODE_RECTIFIED = 1, MODE_SGD = 2, MODE_NONE = 3 };

#define MAX_STATES 4

/* ---------------------------------------------------------------- loads/stores */
static inline float bf16_load(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)0x7FC0; /* as c10::BFloat16 */
    u += 0x7FFFu + ((u >> 16) & 1u);      /* round to nearest even */
    return (uint16_t)(u >> 16);
}

/* ---------------------------------------------------------------- helpers */
/* torch.maximum: NaN if either is NaN */
#define NANMAX(a, b) (((a) != (a) || (a) > (b)) ? (a) : (b))
/* clamp_min: NaN stays NaN */
#define CLAMP_MIN(x, lo) ((x) < (lo) ? (lo) : (x))
#define CLAMP_MAX(x, hi) ((x) > (hi) ? (hi) : (x))
/* torch's lerp: self + w·(end - self) for w < 0.5, end - (end - self)·(1 - w) otherwise */
#define LERP(s, e, w) ((w) < 0.5 ? (s) + (w) * ((e) - (s)) : (e) - ((e) - (s)) * ((M)1 - (w)))

/*
 * Each algorithm is a loop body BODY(i) over element i, using
 *   LD(i) / ST(i, x): load / store the parameter, GL(i): load the gradient,
 *   s0..s3: state arrays (M-typed for float32/float64, float for the half types).
 * Flags are compile-time constants inside each specialised loop (see SPECIALISE),
 * so the compiler vectorises a branch-free loop.
 */

/* ----------------------------------------------------------------- Adam */
/* sc: beta1 beta2 eps decay_factor coupled_wd step_size sqrt_bc2 */
#define ADAM_BODY(AMS, DEC, CPL)                                             \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (DEC) p = p * decay;                                              \
        if (CPL) g = g + cwd * p;                                            \
        M m = LERP(s0[i], g, omb1);                                          \
        M v = s1[i] * b2 + omb2 * (g * g);                                   \
        s0[i] = m;                                                           \
        s1[i] = v;                                                           \
        M sec = v;                                                           \
        if (AMS) {                                                           \
            M mx = s2[i];                                                    \
            sec = NANMAX(mx, v);                                             \
            s2[i] = sec;                                                     \
        }                                                                    \
        M den = sqrt(sec) / sbc2 + eps;                                      \
        ST(i, p + nstep * (m / den));                                        \
    }

/* ---------------------------------------------------------------- EAdam */
/* sc: beta1 beta2 eps weight_decay step_size */
#define EADAM_BODY(AMS, DEC, CPL)                                            \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (CPL) g = g + cwd * p;                                            \
        M m = s0[i] * b1 + omb1 * g;                                         \
        M v = s1[i] * b2 + omb2 * (g * g);                                   \
        s0[i] = m;                                                           \
        M den;                                                               \
        if (AMS) {                                                           \
            s1[i] = v;                                                       \
            M mx = s2[i];                                                    \
            mx = NANMAX(mx, v);                                              \
            s2[i] = mx;                                                      \
            den = sqrt(mx) + eps;                                            \
        } else {                                                             \
            v = v + eps;                                                     \
            s1[i] = v;                                                       \
            den = sqrt(v);                                                   \
        }                                                                    \
        ST(i, p + nstep * (m / den));                                        \
    }

/* ------------------------------------------------------------ AdaBelief */
/* sc: beta1 beta2 eps decay_factor coupled_wd step_size sgd_step rectified_step sqrt_bc2 */
#define ADABELIEF_BODY(AMS, DEC, CPL, MODE, RAMS)                            \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (DEC) p = p * decay;                                              \
        if (CPL) g = g + cwd * p;                                            \
        M m = s0[i] * b1 + omb1 * g;                                         \
        M r = g - m;                                                         \
        M s = s1[i] * b2 + omb2 * (r * r) + eps;                             \
        s0[i] = m;                                                           \
        s1[i] = s;                                                           \
        M sec = s;                                                           \
        if (AMS) {                                                           \
            M mx = s2[i];                                                    \
            sec = NANMAX(mx, s);                                             \
            s2[i] = sec;                                                     \
        }                                                                    \
        if (MODE == MODE_ADAPTIVE) p = p + nstep * (m / (sqrt(sec) / sbc2 + eps)); \
        else if (MODE == MODE_RECTIFIED) p = p + nrect * (m / (sqrt(RAMS ? sec : s) + eps)); \
        else if (MODE == MODE_SGD) p = p + nsgd * m;                         \
        ST(i, p);                                                            \
    }

/* ---------------------------------------------------------------- ADOPT */
/* sc: beta1 beta2 eps lr coupled_wd decoupled_wd clip */
#define ADOPT_BODY(INIT, DCPL, CPL, CLIP)                                    \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (CPL) g = g + cwd * p;                                            \
        if (INIT) {                                                          \
            s1[i] = s1[i] + g * g;                                           \
        } else {                                                             \
            M v = s1[i];                                                     \
            if (DCPL) p = p + ndwd * p;                                      \
            M rt = sqrt(v);                                                  \
            M nr = g / CLAMP_MIN(rt, eps);                                   \
            if (CLIP) { nr = CLAMP_MIN(nr, nclip); nr = CLAMP_MAX(nr, clip); } \
            M m = LERP(s0[i], nr, omb1);                                     \
            s0[i] = m;                                                       \
            ST(i, p + nlr * m);                                              \
            s1[i] = v * b2 + omb2 * (g * g);                                 \
        }                                                                    \
    }

/* ------------------------------------------------------------------ AGD */
/* sc: beta1 beta2 bc1 bc1_prev decay_factor coupled_wd floor clip lr_adjust z_factor tau */
#define AGD_BODY(FIRST, AMS, DEC, CPL, CLIP, WIN)                            \
    for (int64_t i = 0; i < n; i++) {                                        \
        M p = LD(i), g = GL(i) * sign;                                       \
        if (DEC) p = p * decay;                                              \
        if (CPL) g = g + cwd * p;                                            \
        M prev = s0[i];                                                      \
        M m = prev * b1 + omb1 * g;                                          \
        s0[i] = m;                                                           \
        M d = m / bc1;                                                       \
        if (!(FIRST)) d = d - prev / bc1p;                                   \
        M s = s1[i] * b2 + omb2 * (d * d);                                   \
        s1[i] = s;                                                           \
        M sec = s;                                                           \
        if (AMS) {                                                           \
            M mx = s2[i];                                                    \
            sec = NANMAX(mx, s);                                             \
            s2[i] = sec;                                                     \
        }                                                                    \
        M rt = sqrt(sec);                                                    \
        M q = m / CLAMP_MIN(rt, floor_);                                     \
        if (CLIP) { q = CLAMP_MIN(q, nclip); q = CLAMP_MAX(q, clip); }       \
        if (!(WIN)) {                                                        \
            p = p + nlra * q;                                                \
        } else {                                                             \
            M z = (s3[i] + nlra * q) * zf;                                   \
            s3[i] = z;                                                       \
            p = p * tau + ntl * q + tt * z;                                  \
        }                                                                    \
        ST(i, p);                                                            \
    }

/*
 * One function per (algorithm, dtype): a range of n elements of one tensor.
 * The dispatch on flags is written out so that every flag is a constant in
 * the loop the compiler sees.
 */
#define B2(F, BODY, ...) if (F) { BODY(__VA_ARGS__ 1) } else { BODY(__VA_ARGS__ 0) }

#define DEFINE_RANGE(SUFFIX, PT, ST_T, MT, LOADP, STOREP)                                        \
    static void adam_##SUFFIX(int64_t n, PT *restrict pp, const PT *restrict gp, ST_T *restrict s0, \
                              ST_T *restrict s1, ST_T *restrict s2, ST_T *restrict s3,             \
                              const double *sc, int64_t flags) {                                   \
        typedef MT M;                                                                              \
        (void)s3;                                                                                  \
        const M sign = (flags & F_MAXIMIZE) ? (M)-1 : (M)1;                                        \
        const M omb1 = (M)(1.0 - sc[0]), b2 = (M)sc[1], omb2 = (M)(1.0 - sc[1]), eps = (M)sc[2];   \
        const M decay = (M)sc[3], cwd = (M)sc[4], nstep = (M)(-sc[5]), sbc2 = (M)sc[6];           \
        const int ams = !!(flags & F_AMSGRAD), dec = !!(flags & F_DECAY), cpl = !!(flags & F_COUPLED); \
        if (ams) {                                                                                 \
            if (dec) { B2(cpl, ADAM_BODY, 1, 1, ) } else { B2(cpl, ADAM_BODY, 1, 0, ) }           \
        } else {                                                                                   \
            if (dec) { B2(cpl, ADAM_BODY, 0, 1, ) } else { B2(cpl, ADAM_BODY, 0, 0, ) }           \
        }                                                                                          \
    }                                                                                              \
    static void eadam_##SUFFIX(int64_t n, PT *restrict pp, const PT *restrict gp, ST_T *restrict s0, \
                               ST_T *restrict s1, ST_T *restrict s2, ST_T *restrict s3,            \
                               const double *sc, int64_t flags) {                                  \
        typedef MT M;                                                                              \
        (void)s3;                                                                                  \
        const M sign = (flags & F_MAXIMIZE) ? (M)-1 : (M)1;                                        \
        const M b1 = (M)sc[0], omb1 = (M)(1.0 - sc[0]), b2 = (M)sc[1], omb2 = (M)(1.0 - sc[1]);    \
        const M eps = (M)sc[2], cwd = (M)sc[3], nstep = (M)(-sc[4]);                              \
        const int ams = !!(flags & F_AMSGRAD), cpl = !!(flags & F_COUPLED);                        \
        if (ams) { B2(cpl, EADAM_BODY, 1, 0, ) } else { B2(cpl, EADAM_BODY, 0, 0, ) }             \
    }                                                                                              \
    static void adabelief_##SUFFIX(int64_t n, PT *restrict pp, const PT *restrict gp,              \
                                   ST_T *restrict s0, ST_T *restrict s1, ST_T *restrict s2,        \
                                   ST_T *restrict s3, const double *sc, int64_t flags) {           \
        typedef MT M;                                                                              \
        (void)s3;                                                                                  \
        const M sign = (flags & F_MAXIMIZE) ? (M)-1 : (M)1;                                        \
        const M b1 = (M)sc[0], omb1 = (M)(1.0 - sc[0]), b2 = (M)sc[1], omb2 = (M)(1.0 - sc[1]);    \
        const M eps = (M)sc[2], decay = (M)sc[3], cwd = (M)sc[4], nstep = (M)(-sc[5]);            \
        const M nsgd = (M)(-sc[6]), nrect = (M)(-sc[7]), sbc2 = (M)sc[8];                         \
        const int ams = !!(flags & F_AMSGRAD), dec = !!(flags & F_DECAY), cpl = !!(flags & F_COUPLED); \
        const int mode = (int)((flags >> MODE_SHIFT) & 3), rams = !!(flags & F_RECT_AMS);         \
        /* the decay flags are cheap; the costly choices (mode, amsgrad) are specialised */        \
        if (mode == MODE_ADAPTIVE) {                                                               \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, MODE_ADAPTIVE, 0) }                             \
            else { ADABELIEF_BODY(0, dec, cpl, MODE_ADAPTIVE, 0) }                                 \
        } else if (mode == MODE_RECTIFIED) {                                                       \
            if (ams) {                                                                             \
                if (rams) { ADABELIEF_BODY(1, dec, cpl, MODE_RECTIFIED, 1) }                       \
                else { ADABELIEF_BODY(1, dec, cpl, MODE_RECTIFIED, 0) }                            \
            } else { ADABELIEF_BODY(0, dec, cpl, MODE_RECTIFIED, 0) }                              \
        } else if (mode == MODE_SGD) {                                                             \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, MODE_SGD, 0) }                                  \
            else { ADABELIEF_BODY(0, dec, cpl, MODE_SGD, 0) }                                      \
        } else {                                                                                   \
            if (ams) { ADABELIEF_BODY(1, dec, cpl, MODE_NONE, 0) }                                 \
            else { ADABELIEF_BODY(0, dec, cpl, MODE_NONE, 0) }                                     \
        }                                                                                          \
    }                                                                                              \
    static void adopt_##SUFFIX(int64_t n, PT *restrict pp, const PT *restrict gp, ST_T *restrict s0, \
                               ST_T *restrict s1, ST_T *restrict s2, ST_T *restrict s3,            \
                               const double *sc, int64_t flags) {                                  \
        typedef MT M;                                                                              \
        (void)s2; (void)s3;                                                                        \
        const M sign = (flags & F_MAXIMIZE) ? (M)-1 : (M)1;                                        \
        const M omb1 = (M)(1.0 - sc[0]), b2 = (M)sc[1], omb2 = (M)(1.0 - sc[1]), eps = (M)sc[2];   \
        const M nlr = (M)(-sc[3]), cwd = (M)sc[4], ndwd = (M)(-sc[5]);                             \
        const M clip = (M)sc[6], nclip = (M)(-sc[6]);                                              \
        const int cpl = !!(flags & F_COUPLED), dcpl = !!(flags & F_DECOUPLED), clp = !!(flags & F_CLIP); \
        if (flags & F_INIT) {                                                                      \
            if (cpl) { ADOPT_BODY(1, 0, 1, 0) } else { ADOPT_BODY(1, 0, 0, 0) }                                                     \
        } else if (clp) {                                                                          \
            if (dcpl) { ADOPT_BODY(0, 1, cpl, 1) } else { ADOPT_BODY(0, 0, cpl, 1) }               \
        } else {                                                                                   \
            if (dcpl) { ADOPT_BODY(0, 1, cpl, 0) } else { ADOPT_BODY(0, 0, cpl, 0) }               \
        }                                                                                          \
    }                                                                                              \
    static void agd_##SUFFIX(int64_t n, PT *restrict pp, const PT *restrict gp, ST_T *restrict s0, \
                             ST_T *restrict s1, ST_T *restrict s2, ST_T *restrict s3,              \
                             const double *sc, int64_t flags) {                                    \
        typedef MT M;                                                                              \
        const M sign = (flags & F_MAXIMIZE) ? (M)-1 : (M)1;                                        \
        const M b1 = (M)sc[0], omb1 = (M)(1.0 - sc[0]), b2 = (M)sc[1], omb2 = (M)(1.0 - sc[1]);    \
        const M bc1 = (M)sc[2], bc1p = (M)sc[3], decay = (M)sc[4], cwd = (M)sc[5];                \
        const M floor_ = (M)sc[6], clip = (M)sc[7], nclip = (M)(-sc[7]), nlra = (M)(-sc[8]);      \
        const M zf = (M)sc[9], tau = (M)sc[10], ntl = (M)(-2.0 * sc[10] * sc[8]), tt = (M)(2.0 * sc[10]); \
        const int first = !!(flags & F_INIT), ams = !!(flags & F_AMSGRAD), dec = !!(flags & F_DECAY); \
        const int cpl = !!(flags & F_COUPLED), clp = !!(flags & F_CLIP), win = !!(flags & F_WIN);  \
        if (win) {                                                                                 \
            if (ams) { AGD_BODY(first, 1, 0, 0, clp, 1) } else { AGD_BODY(first, 0, 0, 0, clp, 1) } \
        } else if (ams) {                                                                          \
            AGD_BODY(first, 1, dec, cpl, clp, 0)                                                   \
        } else if (first) {                                                                        \
            AGD_BODY(1, 0, dec, cpl, clp, 0)                                                       \
        } else if (clp) {                                                                          \
            AGD_BODY(0, 0, dec, cpl, 1, 0)                                                         \
        } else {                                                                                   \
            AGD_BODY(0, 0, dec, cpl, 0, 0)                                                         \
        }                                                                                          \
    }

/* float32 and float64: parameters, state and math in one type */
#define LD(i) (pp[i])
#define GL(i) (gp[i])
#define ST(i, x) (pp[i] = (x))
DEFINE_RANGE(f32, float, float, float, , )
DEFINE_RANGE(f64, double, double, double, , )
#undef LD
#undef GL
#undef ST

/* bfloat16 parameters, float32 state and math */
#define LD(i) bf16_load(pp[i])
#define GL(i) bf16_load(gp[i])
#define ST(i, x) (pp[i] = bf16_store(x))
DEFINE_RANGE(bf16, uint16_t, float, float, , )
#undef LD
#undef GL
#undef ST

/* float16 parameters, float32 state and math */
#define LD(i) ((float)pp[i])
#define GL(i) ((float)gp[i])
#define ST(i, x) (pp[i] = (_Float16)(x))
DEFINE_RANGE(f16, _Float16, float, float, , )
#undef LD
#undef GL
#undef ST

typedef void (*range_fn)(int64_t, void *, const void *, void *, void *, void *, void *, const double *, int64_t);

#define TABLE_ROW(ALG) \
    { (range_fn)ALG##_f32, (range_fn)ALG##_f64, (range_fn)ALG##_f16, (range_fn)ALG##_bf16 }
static const range_fn TABLE[5][4] = {
    TABLE_ROW(adam), TABLE_ROW(eadam), TABLE_ROW(adabelief), TABLE_ROW(adopt), TABLE_ROW(agd),
};

static const int PARAM_SIZE[4] = {4, 8, 2, 2};
static const int STATE_SIZE[4] = {4, 8, 4, 4};

/* elements per unit of work division: 64 elements keep every thread's writes on its own cache lines */
#define ALIGN 64

int adamkit_abi_version(void) { return 1; }

int adamkit_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/*
 * Step the tensors 0..count-1: params[i], grads[i] and states[k*count + i]
 * (k < nstates) hold numel[i] contiguous elements each.  Returns 0, or a
 * negative number for bad arguments.
 */
int adamkit_step(int algo, int dtype, int64_t count, const int64_t *numel, void *const *params,
                 void *const *grads, void *const *states, int nstates, const double *sc, int64_t flags,
                 int nthreads, int64_t grain) {
    if (algo < 0 || algo > 4 || dtype < 0 || dtype > 3 || nstates < 0 || nstates > MAX_STATES) return -1;
    if (count <= 0) return 0;
    const range_fn fn = TABLE[algo][dtype];
    const int psz = PARAM_SIZE[dtype], ssz = STATE_SIZE[dtype];
    int64_t total = 0;
    for (int64_t i = 0; i < count; i++) {
        if (numel[i] < 0) return -2;
        total += numel[i];
    }
    if (total == 0) return 0;
    int64_t units = (total + ALIGN - 1) / ALIGN;
    int nt = nthreads < 1 ? 1 : nthreads;
    if (grain < ALIGN) grain = ALIGN;
    if ((int64_t)nt > total / grain) nt = (int)(total / grain);
    if (nt < 1) nt = 1;
    if ((int64_t)nt > units) nt = (int)units;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        /* this thread's share of the concatenated elements, in whole units */
        int64_t begin = (units * tid / nth) * ALIGN, end = (units * (tid + 1) / nth) * ALIGN;
        if (end > total) end = total;
        /* find the tensor holding `begin` */
        int64_t i = 0, base = 0;
        while (i < count && base + numel[i] <= begin) base += numel[i++];
        int64_t pos = begin;
        while (pos < end && i < count) {
            const int64_t off = pos - base;
            int64_t len = numel[i] - off;
            if (len > end - pos) len = end - pos;
            if (len > 0) {
                void *s[MAX_STATES] = {0, 0, 0, 0};
                for (int k = 0; k < nstates; k++) s[k] = (char *)states[(int64_t)k * count + i] + off * ssz;
                fn(len, (char *)params[i] + off * psz, (const char *)grads[i] + off * psz, s[0], s[1], s[2],
                   s[3], sc, flags);
            }
            pos += len;
            base += numel[i];
            i++;
        }
    }
    return 0;
}
