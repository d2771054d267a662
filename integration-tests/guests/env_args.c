/*
 * env_args — test guest: shows what WASI hands the guest.
 *
 * Usage: env_args [args...]
 *
 * Prints, one per line:
 *   arg[I]=VALUE        for each argv entry (arg[0] is the program name)
 *   env:NAME=VALUE      for each environment variable, in the order given
 *   realtime_positive=yes|no   clock_gettime(CLOCK_REALTIME) succeeded and > 0
 *   getentropy=ok|failed       getentropy of 16 bytes succeeded
 * then exits 0.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        printf("arg[%d]=%s\n", i, argv[i]);
    }
    for (char **e = environ; e != NULL && *e != NULL; e++) {
        printf("env:%s\n", *e);
    }

    struct timespec ts;
    int rt_ok = clock_gettime(CLOCK_REALTIME, &ts) == 0 &&
                (ts.tv_sec > 0 || (ts.tv_sec == 0 && ts.tv_nsec > 0));
    printf("realtime_positive=%s\n", rt_ok ? "yes" : "no");

    unsigned char buf[16];
    printf("getentropy=%s\n", getentropy(buf, sizeof buf) == 0 ? "ok" : "failed");
    return 0;
}
