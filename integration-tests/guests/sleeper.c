/*
 * sleeper — test guest for checkpoints taken while a function sleeps, and
 * for virtual clocks: monotonic time must never go backwards and every sleep
 * must last at least what was asked, across a checkpoint and a restore.
 *
 * Usage: sleeper [iterations] [sleep_ms]
 *   iterations  number of compute + sleep iterations (default 40)
 *   sleep_ms    length of each sleep in ms, 1..10000 (default 50)
 *
 * Each iteration computes for a few ms, then sleeps sleep_ms: every third
 * iteration with nanosleep (WASI poll_oneoff on a clock), the others with
 * ferry_sleep_ms. CLOCK_MONOTONIC is read around the compute and the sleep.
 * Times are never printed, only checks on them, so the output is
 * deterministic on a correct host.
 *
 * Output:
 *   start iterations N sleep_ms MS
 *   iter I hash HHHHHHHHHHHHHHHH ferry_sleep_ms mono_ok      (or nanosleep)
 * where `mono_ok` becomes `MONOTONIC WENT BACKWARDS` if any reading was
 * below the one before, and ` short sleep` is appended if the sleep lasted
 * less than sleep_ms by the monotonic clock. Then
 *   done iterations N backwards B short S elapsed_ok hash HHHHHHHHHHHHHHHH
 * (`elapsed_ok` becomes `ELAPSED TOO SHORT` if the whole run took less than
 * iterations * sleep_ms) and exit 0.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferry.h"
#include "args.h"

#define COMPUTE_ITERS 1500000

static uint64_t last_ns;
static unsigned long backwards;

/* Reads CLOCK_MONOTONIC in ns and counts readings below the previous one. */
static uint64_t mono_ns(int *went_back) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        printf("clock_gettime failed\n");
        exit(1);
    }
    uint64_t ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    if (ns < last_ns) {
        backwards++;
        *went_back = 1;
    }
    last_ns = ns;
    return ns;
}

static uint64_t compute(uint64_t h) {
    for (int i = 0; i < COMPUTE_ITERS; i++) {
        h = (h ^ (uint64_t)i) * 0x100000001B3ULL;
        h ^= h >> 31;
    }
    return h;
}

int main(int argc, char **argv) {
    uint64_t iterations = 40, sleep_ms = 50;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &iterations) != 0) ||
        (argc > 2 && parse_u64(argv[2], &sleep_ms) != 0) || argc > 3 || sleep_ms < 1 ||
        sleep_ms > 10000) {
        fprintf(stderr, "usage: sleeper [iterations] [sleep_ms (1..10000)]\n");
        return 2;
    }
    printf("start iterations %llu sleep_ms %llu\n", (unsigned long long)iterations,
           (unsigned long long)sleep_ms);

    unsigned long shorts = 0;
    uint64_t h = 0xcbf29ce484222325ULL;
    int went_back = 0;
    uint64_t start = mono_ns(&went_back);
    for (uint64_t i = 1; i <= iterations; i++) {
        went_back = 0;
        mono_ns(&went_back);
        h = compute(h + i);
        uint64_t before = mono_ns(&went_back);
        int nano = i % 3 == 0;
        if (nano) {
            struct timespec req = {(time_t)(sleep_ms / 1000), (long)(sleep_ms % 1000) * 1000000L};
            if (nanosleep(&req, NULL) != 0) {
                printf("iter %llu nanosleep failed\n", (unsigned long long)i);
                return 1;
            }
        } else {
            ferry_sleep_ms(sleep_ms);
        }
        uint64_t after = mono_ns(&went_back);
        int is_short = after < before || after - before < sleep_ms * 1000000u;
        shorts += (unsigned long)is_short;
        printf("iter %llu hash %016llx %s %s%s\n", (unsigned long long)i, (unsigned long long)h,
               nano ? "nanosleep" : "ferry_sleep_ms",
               went_back ? "MONOTONIC WENT BACKWARDS" : "mono_ok", is_short ? " short sleep" : "");
    }
    went_back = 0;
    uint64_t end = mono_ns(&went_back);
    int elapsed_ok = end >= start && end - start >= iterations * sleep_ms * 1000000u;
    printf("done iterations %llu backwards %lu short %lu %s hash %016llx\n",
           (unsigned long long)iterations, backwards, shorts,
           elapsed_ok ? "elapsed_ok" : "ELAPSED TOO SHORT", (unsigned long long)h);
    return 0;
}
