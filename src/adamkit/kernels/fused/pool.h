/* The fused kernel's thread pool (included once by kernel.c, which is one translation unit). */
#if defined(ADAMKIT_THREADS_OPENMP)
#include <omp.h>
#else
#include <pthread.h>
#include <signal.h>
#endif

/* ------------------------------------------------------------- threads
 * parallel_run(nt, fn, ctx) calls fn(ctx, tid, nt) for tid = 0..nt-1, tid 0
 * on the calling thread, and returns when all are done.  The workers are
 * pthreads of the kernel's own, started on first need (as many as the most
 * threads asked for, up to MAX_THREADS) and asleep on a condition variable
 * between calls (no spinning on cores torch's threads share).  One call owns
 * the pool at a time; a concurrent call (another Python thread stepping
 * another optimizer: ctypes releases the GIL) runs on its own thread, which
 * gives the same bits.  A forked child starts with an empty pool.
 * Built with -DADAMKIT_THREADS_OPENMP -fopenmp it uses OpenMP instead: only
 * for `adamkit speed --kernels ...,openmp`, which times the pool against it.
 */
typedef void (*task_fn)(void *ctx, int tid, int nth);
#define MAX_THREADS 256

#if defined(ADAMKIT_THREADS_OPENMP)
static int parallel_run(int nt, task_fn fn, void *ctx) {
#pragma omp parallel num_threads(nt) if (nt > 1)
    fn(ctx, omp_get_thread_num(), omp_get_num_threads());
    return nt;
}
const char *adamkit_threads(void) { return "openmp"; }
#else
static struct {
    pthread_mutex_t owner;            /* held by the call using the workers */
    pthread_mutex_t lock;             /* guards the fields below */
    pthread_cond_t start, finish;
    unsigned long generation;         /* one more for each call that uses the workers */
    task_fn fn;
    void *ctx;
    int nth;                          /* threads of the current call, the caller's included */
    int pending;                      /* workers of the current call still running */
    int workers;                      /* workers started (thread ids 1..workers) */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

struct worker_start {
    int tid;
    unsigned long seen;
};

static void *pool_worker(void *arg) {
    const struct worker_start start = *(struct worker_start *)arg;
    const int tid = start.tid;
    unsigned long seen = start.seen;
    free(arg);
    for (;;) {
        pthread_mutex_lock(&pool.lock);
        while (pool.generation == seen) pthread_cond_wait(&pool.start, &pool.lock);
        seen = pool.generation;
        const task_fn fn = pool.fn;
        void *const ctx = pool.ctx;
        const int nth = pool.nth;
        pthread_mutex_unlock(&pool.lock);
        if (tid >= nth) continue; /* not needed in this call */
        fn(ctx, tid, nth);
        pthread_mutex_lock(&pool.lock);
        if (--pool.pending == 0) pthread_cond_signal(&pool.finish);
        pthread_mutex_unlock(&pool.lock);
    }
    return NULL;
}

/* in a forked child the workers do not exist: start anew */
static void pool_after_fork_child(void) {
    pthread_mutex_init(&pool.owner, NULL);
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.start, NULL);
    pthread_cond_init(&pool.finish, NULL);
    pool.workers = 0;
    pool.pending = 0;
}
static void pool_init(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

/* start workers up to thread id want - 1 (the owner calls this); returns the threads available */
static int pool_grow(int want) {
    if (want > MAX_THREADS) want = MAX_THREADS;
    if (pool.workers + 1 >= want) return want;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* workers take no signals: they stay with Python's thread */
    while (pool.workers + 1 < want) {
        struct worker_start *arg = malloc(sizeof *arg);
        pthread_t thread;
        if (arg == NULL) break;
        arg->tid = pool.workers + 1;
        arg->seen = pool.generation; /* no call starts before this one: the owner holds the pool */
        if (pthread_create(&thread, NULL, pool_worker, arg) != 0) {
            free(arg);
            break;
        }
        pthread_detach(thread);
        pool.workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pool.workers + 1 < want ? pool.workers + 1 : want;
}

static int parallel_run(int nt, task_fn fn, void *ctx) {
    if (nt <= 1 || pthread_once(&pool_once, pool_init) != 0 || pthread_mutex_trylock(&pool.owner) != 0) {
        fn(ctx, 0, 1); /* one thread, or the pool is busy with another call */
        return 1;
    }
    nt = pool_grow(nt);
    if (nt > 1) {
        pthread_mutex_lock(&pool.lock);
        pool.fn = fn;
        pool.ctx = ctx;
        pool.nth = nt;
        pool.pending = nt - 1;
        pool.generation++;
        pthread_cond_broadcast(&pool.start);
        pthread_mutex_unlock(&pool.lock);
    }
    fn(ctx, 0, nt);
    if (nt > 1) {
        pthread_mutex_lock(&pool.lock);
        while (pool.pending > 0) pthread_cond_wait(&pool.finish, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.owner);
    return nt;
}
const char *adamkit_threads(void) { return "pthreads"; }
#endif

/* parallel_run for other native code of adamkit (the table check): one pool in the process; returns the
 * threads it ran on */
int adamkit_parallel_run(int nthreads, task_fn fn, void *ctx) { return parallel_run(nthreads, fn, ctx); }
