/*
 * aggregator — a service other functions call: keeps the count, sum, least
 * and greatest of the readings it is sent and answers each with them.
 *
 * Usage: aggregator   (no arguments)
 *
 * Each message is "SENSOR SEQ VALUE" (text); the reply is
 * "SENSOR SEQ count=N sum=S min=A max=B". Prints `reading SENSOR SEQ VALUE
 * (count N)` to stdout for each. A message it cannot read gets the reply
 * "error: ..." and is not counted.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ferry.h"

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    char message[256];
    char reply[320];
    int64_t count = 0, sum = 0, least = 0, greatest = 0;

    for (;;) {
        int32_t n = ferry_recv((uint8_t *)message, sizeof message - 1, -1);
        if (n == FERRY_TIMEOUT) {
            continue;
        }
        if (n < 0 || (uint32_t)n >= sizeof message) {
            /* Too long for a reading: take it out of the inbox and refuse it. */
            static uint8_t big[1 << 16];
            if (n > 0 && (uint32_t)n <= sizeof big) {
                ferry_recv(big, sizeof big, 0);
            }
            const char *refusal = "error: a reading is at most 255 bytes";
            ferry_reply((const uint8_t *)refusal, (uint32_t)strlen(refusal));
            continue;
        }
        message[n] = '\0';
        char sensor[64];
        int64_t seq, value;
        if (sscanf(message, "%63s %" SCNd64 " %" SCNd64, sensor, &seq, &value) != 3) {
            int len = snprintf(reply, sizeof reply, "error: not \"SENSOR SEQ VALUE\": %s", message);
            ferry_reply((const uint8_t *)reply, (uint32_t)len);
            continue;
        }
        if (count == 0 || value < least) {
            least = value;
        }
        if (count == 0 || value > greatest) {
            greatest = value;
        }
        count += 1;
        sum += value;
        printf("reading %s %" PRId64 " %" PRId64 " (count %" PRId64 ")\n", sensor, seq, value, count);
        int len = snprintf(reply, sizeof reply, "%s %" PRId64 " count=%" PRId64 " sum=%" PRId64 " min=%" PRId64
                           " max=%" PRId64, sensor, seq, count, sum, least, greatest);
        ferry_reply((const uint8_t *)reply, (uint32_t)len);
    }
}
