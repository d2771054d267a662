/*
 * sender — test guest: sends COUNT messages "message N" to the function
 * TARGET with ferry_send, printing `send N to TARGET = CODE` for each
 * (0 delivered, -3 FERRY_NO_SUCH_FUNCTION, -4 FERRY_INBOX_FULL,
 * -5 FERRY_DENIED), then `sender done`, and exits 0.
 *
 * Usage: sender TARGET [COUNT]   (COUNT defaults to 1)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ferry.h"

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: sender TARGET [COUNT]\n");
        return 2;
    }
    const char *target = argv[1];
    long count = argc > 2 ? strtol(argv[2], NULL, 10) : 1;
    for (long n = 1; n <= count; n++) {
        char message[64];
        int len = snprintf(message, sizeof message, "message %ld", n);
        int32_t code = ferry_send(target, (uint32_t)strlen(target), (const uint8_t *)message, (uint32_t)len);
        printf("send %ld to %s = %d\n", n, target, (int)code);
    }
    printf("sender done\n");
    return 0;
}
