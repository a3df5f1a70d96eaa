/* The one thread pool of the extensions: persistent workers that spin briefly, then sleep.
 *
 * pool_run(fn, ctx, nth) runs fn(ctx, tid, nth) on nth threads, the caller being thread 0, and
 * returns when all are done. Call it with the GIL released; work that should stop on Ctrl-C is
 * cut into several pool_run calls with PyErr_CheckSignals between them (see kernels.c). Workers
 * start on first use and stay, so a call costs a wake-up, not a thread creation; one parallel
 * job runs at a time per extension (each extension includes this file and has its own pool),
 * and other callers wait for it. Work inside fn is usually taken from a shared atomic counter in
 * small grabs, so a core that another process is using slows its own grabs only.
 *
 * pool_run_fresh(fn, ctx, nth) runs the same kind of task on threads created for the call and
 * joined before it returns. It is for work whose caller sets the priority: Linux nice values are
 * per thread and inherited at creation, and an unprivileged thread cannot lower its nice value
 * again, so persistent workers would carry one caller's background priority into another's
 * foreground work (or ignore it). packed/__init__.py's Unpacking decodes below the model loader's
 * priority this way; a thread creation costs microseconds against chunks that take milliseconds.
 *
 * Call pool_init() once from the module's init function (it re-arms the pool in a forked child).
 */
#ifndef GGUF_POOL_H
#define GGUF_POOL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#define POOL_MAX_THREADS 256
#define POOL_SPIN_NS 200000 /* how long an idle thread polls before sleeping */

typedef void (*pool_fn)(void *ctx, int tid, int nth);

static struct {
    pthread_mutex_t call; /* one parallel job at a time (other callers wait, GIL released) */
    pthread_mutex_t m;
    pthread_cond_t cv_work, cv_done;
    int nworkers; /* started workers; the caller is thread 0 */
    atomic_uint gen;
    atomic_int remaining;
    pool_fn fn;
    void *ctx;
    int nth;
    unsigned start_gen[POOL_MAX_THREADS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL, NULL, 0, {0}};

static uint64_t pool_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline void pool_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static void *pool_worker(void *arg) {
    const int tid = (int)(intptr_t)arg;
    /* the generation current when this worker was created (it may start after the next post) */
    unsigned seen = pool.start_gen[tid];
    for (;;) {
        unsigned g = atomic_load_explicit(&pool.gen, memory_order_acquire);
        if (g == seen) {
            const uint64_t t0 = pool_now_ns();
            for (int it = 0;; it++) {
                g = atomic_load_explicit(&pool.gen, memory_order_acquire);
                if (g != seen) break;
                pool_relax();
                if ((it & 255) == 255 && pool_now_ns() - t0 > POOL_SPIN_NS) break;
            }
            if (g == seen) {
                pthread_mutex_lock(&pool.m);
                while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen)
                    pthread_cond_wait(&pool.cv_work, &pool.m);
                pthread_mutex_unlock(&pool.m);
            }
        }
        seen = g;
        if (tid < pool.nth) pool.fn(pool.ctx, tid, pool.nth);
        if (atomic_fetch_sub_explicit(&pool.remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.m);
            pthread_cond_signal(&pool.cv_done);
            pthread_mutex_unlock(&pool.m);
        }
    }
    return NULL;
}

/* After fork() only the forking thread exists: forget the workers, re-arm the locks. */
static void pool_atfork_child(void) {
    pthread_mutex_init(&pool.call, NULL);
    pthread_mutex_init(&pool.m, NULL);
    pthread_cond_init(&pool.cv_work, NULL);
    pthread_cond_init(&pool.cv_done, NULL);
    pool.nworkers = 0;
    atomic_store(&pool.gen, 0);
    atomic_store(&pool.remaining, 0);
}

static void pool_init(void) {
    static int done = 0;
    if (!done) {
        pthread_atfork(NULL, NULL, pool_atfork_child);
        done = 1;
    }
}

/* Run fn on nth threads (the caller included; fewer if threads cannot be started). Call with
 * the GIL released. */
static void pool_run(pool_fn fn, void *ctx, int nth) {
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool.call);
    while (pool.nworkers < nth - 1 && pool.nworkers < POOL_MAX_THREADS - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pool.start_gen[pool.nworkers + 1] = atomic_load_explicit(&pool.gen, memory_order_relaxed);
        const int rc = pthread_create(&t, &attr, pool_worker, (void *)(intptr_t)(pool.nworkers + 1));
        pthread_attr_destroy(&attr);
        if (rc != 0) break; /* run with the workers we have */
        pool.nworkers++;
    }
    if (nth > pool.nworkers + 1) nth = pool.nworkers + 1;
    if (nth <= 1) {
        pthread_mutex_unlock(&pool.call);
        fn(ctx, 0, 1);
        return;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.nth = nth;
    atomic_store_explicit(&pool.remaining, pool.nworkers, memory_order_relaxed);
    pthread_mutex_lock(&pool.m);
    atomic_fetch_add_explicit(&pool.gen, 1, memory_order_release);
    pthread_cond_broadcast(&pool.cv_work);
    pthread_mutex_unlock(&pool.m);

    fn(ctx, 0, nth);

    const uint64_t t0 = pool_now_ns();
    for (int it = 0; atomic_load_explicit(&pool.remaining, memory_order_acquire) != 0; it++) {
        pool_relax();
        if ((it & 255) == 255 && pool_now_ns() - t0 > POOL_SPIN_NS) {
            pthread_mutex_lock(&pool.m);
            while (atomic_load_explicit(&pool.remaining, memory_order_acquire) != 0)
                pthread_cond_wait(&pool.cv_done, &pool.m);
            pthread_mutex_unlock(&pool.m);
            break;
        }
    }
    pthread_mutex_unlock(&pool.call);
}

typedef struct {
    pool_fn fn;
    void *ctx;
    int tid, nth;
} pool_fresh_arg;

static void *pool_fresh_main(void *arg) {
    const pool_fresh_arg *a = arg;
    a->fn(a->ctx, a->tid, a->nth);
    return NULL;
}

/* Run fn on nth threads created for this call (the caller is thread 0); a thread that cannot be
 * started has its share run by the caller afterwards. Call with the GIL released. */
static void pool_run_fresh(pool_fn fn, void *ctx, int nth) {
    if (nth > POOL_MAX_THREADS) nth = POOL_MAX_THREADS;
    if (nth <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pthread_t t[POOL_MAX_THREADS];
    pool_fresh_arg args[POOL_MAX_THREADS];
    int started[POOL_MAX_THREADS];
    for (int i = 1; i < nth; i++) {
        args[i] = (pool_fresh_arg){fn, ctx, i, nth};
        started[i] = pthread_create(&t[i], NULL, pool_fresh_main, &args[i]) == 0;
    }
    fn(ctx, 0, nth);
    for (int i = 1; i < nth; i++) {
        if (started[i]) pthread_join(t[i], NULL);
        else fn(ctx, i, nth);
    }
}

#endif
