/*
 * ends_on_message — test guest: a service that ends while a caller waits.
 * Replies to every message with the same bytes, except: `trap` prints
 * `trapping` and executes `unreachable`; `exit` prints `exiting` and exits
 * with code 3. The caller must hear how the function ended.
 *
 * Usage: ends_on_message   (no arguments)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    static uint8_t buf[4096];
    for (;;) {
        int32_t n = ferry_recv(buf, sizeof buf, -1);
        if (n < 0) {
            printf("recv failed %d\n", n);
            return 2;
        }
        if (n == 4 && memcmp(buf, "trap", 4) == 0) {
            printf("trapping\n");
            __builtin_trap();
        }
        if (n == 4 && memcmp(buf, "exit", 4) == 0) {
            printf("exiting\n");
            exit(3);
        }
        ferry_reply(buf, (uint32_t)n);
    }
}
