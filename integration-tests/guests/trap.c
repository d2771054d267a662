/*
 * trap — test guest: prints `about to trap`, flushes stdout, then executes
 * an `unreachable` instruction (__builtin_trap). The hub must report the
 * trap as the function's failure and keep the line already printed.
 *
 * Usage: trap   (no arguments)
 */
#include <stdio.h>

int main(void) {
    printf("about to trap\n");
    fflush(stdout);
    __builtin_trap();
}
