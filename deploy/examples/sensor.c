/*
 * sensor — reads a (simulated) sensor and calls the aggregator with each
 * reading, wherever in the cluster the aggregator runs.
 *
 * Usage: sensor [NAME [AGGREGATOR [COUNT [INTERVAL_MS]]]]
 *   NAME         this sensor's name in its readings (default "sensor")
 *   AGGREGATOR   the function to call (default "aggregator")
 *   COUNT        readings to send, 0 for no end (default 0)
 *   INTERVAL_MS  pause between readings (default 100)
 *
 * Reading SEQ (1, 2, ...) is a deterministic value from SEQ. For each it
 * prints `call SEQ -> REPLY` on success and `call SEQ failed: CODE` when
 * ferry_call returned an error code; then `done` after COUNT readings.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

static int64_t reading(int64_t seq) {
    /* A slow wave with some jitter, 0..999. */
    uint64_t x = (uint64_t)seq * 2654435761u;
    return (int64_t)((seq * 37 + (x >> 7) % 100) % 1000);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *name = argc > 1 ? argv[1] : "sensor";
    const char *aggregator = argc > 2 ? argv[2] : "aggregator";
    int64_t count = argc > 3 ? strtoll(argv[3], NULL, 10) : 0;
    int64_t interval_ms = argc > 4 ? strtoll(argv[4], NULL, 10) : 100;

    char message[128];
    uint8_t reply[512];
    for (int64_t seq = 1; count == 0 || seq <= count; seq++) {
        int len = snprintf(message, sizeof message, "%s %" PRId64 " %" PRId64, name, seq, reading(seq));
        int32_t n = ferry_call(aggregator, (uint32_t)strlen(aggregator), (const uint8_t *)message, (uint32_t)len,
                               reply, sizeof reply, 10000);
        if (n < 0) {
            printf("call %" PRId64 " failed: %d\n", seq, (int)n);
        } else {
            int shown = n < (int32_t)sizeof reply ? (int)n : (int)sizeof reply;
            printf("call %" PRId64 " -> %.*s\n", seq, shown, (const char *)reply);
        }
        if (interval_ms > 0) {
            ferry_sleep_ms((uint64_t)interval_ms);
        }
    }
    printf("done\n");
    return 0;
}
