/*
 * quiet_echo — replies to every message with "echo: " + the message, and
 * writes nothing: the request–reply path alone, for benchmarks that set a
 * function against a handler that does only that.
 *
 * Usage: quiet_echo   (no arguments)
 */
#include <stdint.h>
#include <string.h>

#include "ferry.h"

#define PREFIX "echo: "
#define PREFIX_LEN (sizeof(PREFIX) - 1)
#define CAP (64 * 1024)

static uint8_t buf[PREFIX_LEN + CAP];

int main(void) {
    memcpy(buf, PREFIX, PREFIX_LEN);
    for (;;) {
        int32_t n = ferry_recv(buf + PREFIX_LEN, CAP, -1);
        if (n < 0) {
            continue;
        }
        if ((uint32_t)n > CAP) {
            /* Too big for this benchmark guest: take it and answer empty. */
            static uint8_t big[1 << 20];
            if ((uint32_t)n <= sizeof big) {
                ferry_recv(big, sizeof big, 0);
            }
            ferry_reply(buf, 0);
            continue;
        }
        ferry_reply(buf, (uint32_t)(PREFIX_LEN + (uint32_t)n));
    }
}
