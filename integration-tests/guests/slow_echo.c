/*
 * slow_echo — a service that takes its time: replies to every message with
 * "echo: " + the message, after computing for about `work` milliseconds of
 * CPU, so that callers queue up and a move finds it in the middle of a
 * request with more waiting in its inbox.
 *
 * Usage: slow_echo [work_ms=20]
 *
 * Output: `got N bytes` for each message, before the work.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ferry.h"

#define PREFIX "echo: "
#define PREFIX_LEN (sizeof(PREFIX) - 1)
#define CAP 4096

/* Where the busy work goes, so that it is not optimised away. */
volatile uint64_t sink;

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    uint64_t work_ms = argc > 1 ? strtoull(argv[1], NULL, 10) : 20;
    static uint8_t buf[PREFIX_LEN + CAP];
    memcpy(buf, PREFIX, PREFIX_LEN);
    for (;;) {
        int32_t n = ferry_recv(buf + PREFIX_LEN, CAP, -1);
        if (n == FERRY_TIMEOUT) {
            continue;
        }
        if (n < 0 || n > CAP) {
            fprintf(stderr, "slow_echo: ferry_recv gave %d\n", (int)n);
            return 1;
        }
        printf("got %d bytes\n", (int)n);
        uint64_t until = now_ms() + work_ms;
        while (now_ms() < until) {
            for (int i = 0; i < 10000; i++) {
                sink += (uint64_t)i * 2654435761u;
            }
        }
        int32_t rc = ferry_reply(buf, (uint32_t)(PREFIX_LEN + (uint32_t)n));
        if (rc != 0) {
            fprintf(stderr, "slow_echo: ferry_reply failed: %d\n", (int)rc);
        }
    }
}
