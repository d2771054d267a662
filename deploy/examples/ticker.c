/*
 * ticker — prints a numbered tick at a fixed interval, forever or N times.
 *
 * Usage: ticker [interval_ms] [count]
 *   interval_ms  time between ticks in ms (default 500)
 *   count        number of ticks, 0 = forever (default 0)
 *
 * Each line is `tick N t=MS`, where N counts from 1 and MS is the monotonic
 * clock in milliseconds since the program started. It sleeps with
 * ferry_sleep_ms (the function's virtual clock, so the hub can unwind it
 * while it waits). stdout is line-buffered so every tick shows up at once.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ferry.h"
#include "args.h"

static uint64_t monotonic_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        return 0;
    }
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv) {
    uint64_t interval_ms = 500;
    uint64_t count = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);

    if ((argc > 1 && parse_u64(argv[1], &interval_ms) != 0) ||
        (argc > 2 && parse_u64(argv[2], &count) != 0) || argc > 3) {
        fprintf(stderr, "usage: ticker [interval_ms] [count]\n");
        return 2;
    }

    uint64_t start = monotonic_ms();
    for (uint64_t n = 1; count == 0 || n <= count; n++) {
        printf("tick %llu t=%llu\n", (unsigned long long)n,
               (unsigned long long)(monotonic_ms() - start));
        fflush(stdout);
        if (count != 0 && n == count) {
            break;
        }
        ferry_sleep_ms(interval_ms);
    }
    return 0;
}
