/*
 * holds_open — test guest: keeps one file open for reading and reads it
 * again every tick.
 *
 * Usage: holds_open PATH [PAUSE_MS=100]
 *   Opens PATH once (exits 1 if it cannot), then forever: sleeps PAUSE_MS,
 *   reads the file's first line again through the same descriptor and
 *   prints `tick N LINE`. A restore must open the descriptor again where
 *   the function runs, so a move to a hub without the file must be refused.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        fprintf(stderr, "usage: holds_open PATH [PAUSE_MS]\n");
        return 2;
    }
    long pause_ms = argc > 2 ? atol(argv[2]) : 100;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        printf("holds_open: cannot open %s\n", argv[1]);
        return 1;
    }
    for (unsigned long tick = 1;; tick++) {
        struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        char line[128] = {0};
        if (pread(fd, line, sizeof line - 1, 0) < 0) {
            printf("holds_open: cannot read %s\n", argv[1]);
            return 1;
        }
        line[strcspn(line, "\n")] = 0;
        printf("tick %lu %s\n", tick, line);
    }
}
