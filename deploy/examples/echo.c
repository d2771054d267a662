/*
 * echo — replies to every message with the same bytes prefixed by "echo: ".
 *
 * Usage: echo   (no arguments)
 *
 * Loops forever: ferry_recv with no timeout into a buffer (grown with malloc
 * when a message is larger than the buffer; the message stays in the inbox
 * until a large enough buffer is offered), then ferry_reply with
 * "echo: " + message (or, when that would be over 16 MiB, a line saying
 * so). Prints `got N bytes` to stdout for each message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

#define PREFIX "echo: "
#define PREFIX_LEN (sizeof(PREFIX) - 1)

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* One buffer holds the prefix followed by the message, so the reply is
     * sent without a copy: recv writes at buf + PREFIX_LEN. */
    uint32_t cap = 256;
    uint8_t *buf = malloc(PREFIX_LEN + cap);
    if (buf == NULL) {
        fprintf(stderr, "echo: out of memory\n");
        return 1;
    }
    memcpy(buf, PREFIX, PREFIX_LEN);

    for (;;) {
        int32_t n = ferry_recv(buf + PREFIX_LEN, cap, -1);
        if (n == FERRY_TIMEOUT) {
            continue;
        }
        if (n < 0) {
            fprintf(stderr, "echo: ferry_recv failed: %d\n", (int)n);
            return 1;
        }
        if ((uint32_t)n > cap) {
            /* Too big: the message is still first in the inbox. Grow and retry. */
            uint8_t *bigger = malloc(PREFIX_LEN + (size_t)n);
            if (bigger == NULL) {
                fprintf(stderr, "echo: out of memory for a %d byte message\n", (int)n);
                return 1;
            }
            memcpy(bigger, PREFIX, PREFIX_LEN);
            free(buf);
            buf = bigger;
            cap = (uint32_t)n;
            continue;
        }
        printf("got %d bytes\n", (int)n);
        int32_t rc = ferry_reply(buf, (uint32_t)(PREFIX_LEN + (uint32_t)n));
        if (rc == FERRY_TOO_BIG) {
            /* Nothing was sent and the caller still waits: say why. */
            static const char too_big[] = "echo: the reply would be over 16 MiB";
            rc = ferry_reply((const uint8_t *)too_big, sizeof(too_big) - 1);
        }
        if (rc != 0) {
            fprintf(stderr, "echo: ferry_reply failed: %d\n", (int)rc);
        }
    }
}
