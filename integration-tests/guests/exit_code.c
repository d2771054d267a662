/*
 * exit_code — test guest: prints `bye` and exits with a chosen code.
 *
 * Usage: exit_code [code]   (default 7)
 */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    int code = argc > 1 ? atoi(argv[1]) : 7;
    printf("bye\n");
    fflush(stdout);
    exit(code);
}
