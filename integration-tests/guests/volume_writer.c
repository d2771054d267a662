/*
 * volume_writer — benchmark guest: a volume of files, 1 % of it rewritten
 * per round.
 *
 * Usage: volume_writer DIR MIB FILES PIECE_KIB SEED [ROUNDS=1000] [PAUSE_MS=1500]
 *   Fills FILES files DIR/f0 .. DIR/fN-1 holding MIB MiB together with
 *   pseudo-random (incompressible) bytes from SEED and prints `filled`. Then,
 *   ROUNDS times: sleeps PAUSE_MS, rewrites 1 % of the volume's bytes as
 *   pieces of PIECE_KIB KiB at pseudo-random piece-aligned offsets of
 *   pseudo-random files (pwrite), and prints `wrote N` (the round). Prints
 *   `volume_writer done` at the end. Exits 1 on any I/O error.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

static uint64_t next_random(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 17;
}

static void fill(unsigned char *buf, size_t len) {
    for (size_t i = 0; i + 8 <= len; i += 8) {
        uint64_t v = next_random();
        for (int b = 0; b < 8; b++) buf[i + b] = (unsigned char)(v >> (8 * b));
    }
}

static void die(const char *what, const char *path) {
    printf("volume_writer: %s %s failed\n", what, path);
    exit(1);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 6 || argc > 8) {
        fprintf(stderr, "usage: volume_writer DIR MIB FILES PIECE_KIB SEED [ROUNDS] [PAUSE_MS]\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t total = (uint64_t)atoll(argv[2]) << 20;
    int files = atoi(argv[3]);
    size_t piece = (size_t)atoll(argv[4]) << 10;
    state = (uint64_t)atoll(argv[5]) | 1;
    int rounds = argc > 6 ? atoi(argv[6]) : 1000;
    long pause_ms = argc > 7 ? atol(argv[7]) : 1500;
    if (files <= 0 || piece == 0 || total / files < piece) {
        fprintf(stderr, "volume_writer: each file must hold at least one piece\n");
        return 2;
    }
    uint64_t per_file = total / files;
    per_file -= per_file % piece;

    enum { BLOCK = 1 << 16 };
    unsigned char *buf = malloc(BLOCK > piece ? BLOCK : piece);
    int *fds = malloc(sizeof(int) * files);
    char path[512];
    for (int f = 0; f < files; f++) {
        snprintf(path, sizeof path, "%s/f%d", dir, f);
        fds[f] = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fds[f] < 0) die("open", path);
        for (uint64_t at = 0; at < per_file; at += BLOCK) {
            size_t len = per_file - at < BLOCK ? (size_t)(per_file - at) : BLOCK;
            fill(buf, len);
            if (pwrite(fds[f], buf, len, (off_t)at) != (ssize_t)len) die("write", path);
        }
        if (fsync(fds[f]) != 0) die("fsync", path);
    }
    printf("filled\n");

    uint64_t pieces_per_round = (per_file * files / 100) / piece;
    if (pieces_per_round == 0) pieces_per_round = 1;
    uint64_t pieces_per_file = per_file / piece;
    for (int round = 1; round <= rounds; round++) {
        struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        for (uint64_t p = 0; p < pieces_per_round; p++) {
            int f = (int)(next_random() % (uint64_t)files);
            uint64_t at = (next_random() % pieces_per_file) * piece;
            fill(buf, piece);
            if (pwrite(fds[f], buf, piece, (off_t)at) != (ssize_t)piece) die("rewrite", "a file");
        }
        printf("wrote %d\n", round);
    }
    printf("volume_writer done\n");
    return 0;
}
