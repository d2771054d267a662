/*
 * hostile_ferry — test guest: the `ferry` host API with memory outside the
 * guest's. The API has no error code for that: the hub fails the function
 * with the call and the range named. One mode per call (each ends the run):
 *
 *   hostile_ferry log     ferry_log of 32 bytes at 0xfffffff0 (wraps past 4 GiB)
 *   hostile_ferry recv    ferry_recv into the last 4 bytes, offering 64
 *   hostile_ferry reply   ferry_reply of 0xffffff00 bytes at 16
 *   hostile_ferry send    ferry_send of 16 bytes from 8 before the end
 *   hostile_ferry flood   well-formed but greedy: sends its 16 MiB buffer to
 *                         itself 64 times (it never reads its inbox), sends to
 *                         a 300-byte name, logs 100 KiB; prints the results
 *                         and `memory_bytes=N`, exits 0
 *
 * Each failing mode prints `memory_bytes=N` and `calling ferry.CALL` before
 * the call.
 */
#include <stdio.h>
#include <string.h>

#include "ferry.h"
#include "wasi_raw.h"

#define FLOOD_BYTES (16u << 20)

static uint8_t flood[FLOOD_BYTES];

static int flood_self(const char *self) {
    memset(flood, 'm', sizeof flood);
    int delivered = 0, inbox_full = 0, other = 0;
    for (int i = 0; i < 64; i++) {
        int32_t rc = ferry_send(self, (uint32_t)strlen(self), flood, FLOOD_BYTES);
        if (rc == 0) {
            delivered++;
        } else if (rc == FERRY_INBOX_FULL) {
            inbox_full++;
        } else {
            other++;
        }
    }
    printf("send 16 MiB to self x64: delivered=%d inbox_full=%d other=%d\n", delivered, inbox_full, other);
    char long_name[300];
    memset(long_name, 'n', sizeof long_name);
    printf("send to a 300-byte name = %d\n", (int)ferry_send(long_name, sizeof long_name, flood, 1));
    ferry_log(FERRY_LOG_INFO, (const char *)flood, 100u << 10);
    printf("memory_bytes=%u\n", (unsigned)memory_end());
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: hostile_ferry log|recv|reply|send|flood\n");
        return 2;
    }
    const char *mode = argv[1];
    uint32_t end = memory_end();
    if (strcmp(mode, "flood") != 0) {
        printf("memory_bytes=%u\n", (unsigned)end);
    }
    printf("calling ferry.%s\n", mode);
    fflush(stdout);
    if (strcmp(mode, "log") == 0) {
        ferry_log(FERRY_LOG_INFO, (const char *)(uintptr_t)0xFFFFFFF0u, 32);
    } else if (strcmp(mode, "recv") == 0) {
        ferry_recv((uint8_t *)(uintptr_t)(end - 4), 64, 0);
    } else if (strcmp(mode, "reply") == 0) {
        ferry_reply((const uint8_t *)(uintptr_t)16, 0xFFFFFF00u);
    } else if (strcmp(mode, "send") == 0) {
        ferry_send("x", 1, (const uint8_t *)(uintptr_t)(end - 8), 16);
    } else if (strcmp(mode, "flood") == 0) {
        return flood_self(argv[0]);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("ferry.%s returned\n", mode);
    return 0;
}
