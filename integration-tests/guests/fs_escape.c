/*
 * fs_escape — test guest: tries to get out of its preopened directory, every
 * way we know of, and reports each attempt.
 *
 * Usage: fs_escape DIR [ROUNDS]
 *   DIR     the function's writable preopen (e.g. /data).
 *   ROUNDS  opens of DIR/swap in the swap case (default 2000).
 * Environment: FERRY_OUTSIDE (optional) the host path of a file outside every
 *   preopen whose content starts with `OUTSIDE-SECRET`. With it, more cases
 *   aim at that file (and its directory) instead of only /etc and /tmp.
 *
 * Each case tries to read, stat or change something outside DIR and prints
 * `CASE: refused (errno N)` (N: the errno of the step that failed, which may
 * be the creation of the symlink the case needs) or `CASE: ESCAPED`. Nothing
 * outside is damaged when a case does escape: outside files are only opened
 * for reading or have their times "changed" by a call that changes nothing;
 * what gets created outside (in the parent of DIR, in /tmp or next to
 * FERRY_OUTSIDE) is named fs_escape_* and removed again.
 * A symlink DIR/NAME the guest needs is reused if it is already there with
 * the right target (the host may plant them), made otherwise.
 *
 * Swap case: the host test creates DIR/swap before the guest starts and keeps
 * flipping it between a regular file and a symlink to FERRY_OUTSIDE while the
 * guest opens and reads DIR/swap ROUNDS times; a read starting with
 * OUTSIDE-SECRET is an escape: `swap: refused N, read inside M, escaped K`
 * (or `swap: skipped (no DIR/swap)`).
 * Also checks that relative symlinks staying inside DIR work: `inside
 * symlink: ok` (or `inside symlink: FAIL (errno N)`, not counted).
 *
 * Ends with `escapes=K` and exits K (0: nothing escaped).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

#define MARKER "OUTSIDE-SECRET"
/* Enough ../ to reach the host's root from anywhere. */
#define UP "../../../../../../../../../../../../../../../../"

static const char *dir;
static int dirfd_ = -1;
static int escapes;

/* DIR/REL in one of 16 rotating buffers: use it at once. */
static const char *P(const char *rel) {
    static char bufs[16][1024];
    static int next;
    char *b = bufs[next++ % 16];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, rel);
    return b;
}

static void refused(const char *name, int err) { printf("%s: refused (errno %d)\n", name, err); }
static void escaped(const char *name) {
    printf("%s: ESCAPED\n", name);
    escapes++;
}
/* R is the result of the attempt (< 0: refused, errno tells why). */
static void outcome(const char *name, int r) {
    if (r < 0) refused(name, errno); else escaped(name);
}

/* Makes DIR/NAME a symlink to TARGET; -1 (errno set) if the runtime refuses. */
static int plant(const char *target, const char *name) {
    char have[1024];
    ssize_t n = readlink(P(name), have, sizeof have - 1);
    if (n >= 0) {
        have[n] = 0;
        if (strcmp(have, target) == 0) return 0;
    }
    unlink(P(name));
    return symlink(target, P(name));
}

static int open_close(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd >= 0) close(fd);
    return fd;
}

/* Opens PATH with FLAGS through the symlink NAME -> TARGET. */
static void via_link(const char *case_name, const char *target, const char *name, const char *path,
                     int flags) {
    if (plant(target, name) < 0) { refused(case_name, errno); return; }
    outcome(case_name, open_close(path, flags));
}

static int put(const char *path, const char *content) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    ssize_t n = write(fd, content, strlen(content));
    close(fd);
    return n == (ssize_t)strlen(content) ? 0 : -1;
}

static int starts_with(const char *path, const char *want) {
    char buf[64] = {0};
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) return -1;
    return strncmp(buf, want, strlen(want)) == 0;
}

static void dotdot(void) {
    outcome("../ read", open_close(P(UP "etc/passwd"), O_RDONLY));
    int r = open_close(P("../fs_escape_probe"), O_WRONLY | O_CREAT);
    outcome("../ create", r);
    if (r >= 0) unlink(P("../fs_escape_probe"));
    mkdir(P("a"), 0755);
    outcome("a/../../ read", open_close(P("a/../" UP "etc/passwd"), O_RDONLY));
    r = open_close(P("a/../../fs_escape_probe"), O_WRONLY | O_CREAT);
    outcome("a/../../ create", r);
    if (r >= 0) unlink(P("a/../../fs_escape_probe"));
    outcome(".. directory", open_close(P(".."), O_RDONLY | O_DIRECTORY));
    struct stat st;
    outcome("../ stat", stat(P(UP "etc/passwd"), &st));
    r = mkdir(P("../fs_escape_dir"), 0755);
    outcome("../ mkdir", r);
    if (r == 0) rmdir(P("../fs_escape_dir"));
    via_link("symlink then ../", "a", "alink", P("alink/../" UP "etc/passwd"), O_RDONLY);
}

static void absolute(void) {
    outcome("/etc/passwd", open_close("/etc/passwd", O_RDONLY));
    outcome("/proc/self/status", open_close("/proc/self/status", O_RDONLY));
    outcome("/proc/self/root/etc/passwd", open_close("/proc/self/root/etc/passwd", O_RDONLY));
    struct stat st;
    outcome("stat /etc/passwd", stat("/etc/passwd", &st));
}

static void symlinks(const char *outside) {
    via_link("relative symlink out", UP "etc/passwd", "rel_out", P("rel_out"), O_RDONLY);
    via_link("absolute symlink out", "/etc/passwd", "abs_out", P("abs_out"), O_RDONLY);
    via_link("symlink to symlink out", "rel_out", "chain", P("chain"), O_RDONLY);
    struct stat st;
    if (plant(UP "etc/passwd", "rel_out") < 0) refused("stat through relative symlink out", errno);
    else outcome("stat through relative symlink out", stat(P("rel_out"), &st));
    if (plant("/etc/passwd", "abs_out") < 0) refused("stat through absolute symlink out", errno);
    else outcome("stat through absolute symlink out", stat(P("abs_out"), &st));
    /* fstflags 0: changes nothing even where the call gets through. */
    if (plant(UP "etc/passwd", "rel_out") < 0) {
        refused("set times through symlink out", errno);
    } else {
        __wasi_errno_t e =
            __wasi_path_filestat_set_times(dirfd_, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "rel_out", 0, 0, 0);
        errno = e;
        outcome("set times through symlink out", e ? -1 : 0);
    }

    via_link("symlink to dir, trailing slash", "/etc", "link_to_outside_dir", P("link_to_outside_dir/"),
             O_RDONLY | O_DIRECTORY);
    via_link("symlink to dir, O_DIRECTORY", "/etc", "link_to_outside_dir", P("link_to_outside_dir"),
             O_RDONLY | O_DIRECTORY);
    via_link("relative symlink to dir, trailing slash", UP "etc", "rel_dir_out", P("rel_dir_out/"),
             O_RDONLY | O_DIRECTORY);
    via_link("file under symlinked dir", "/etc", "link_to_outside_dir", P("link_to_outside_dir/passwd"),
             O_RDONLY);
    via_link("file under relative symlinked dir", UP "etc", "rel_dir_out", P("rel_dir_out/passwd"), O_RDONLY);
    if (plant("/etc", "link_to_outside_dir") < 0) refused("stat symlinked dir, trailing slash", errno);
    else outcome("stat symlinked dir, trailing slash", stat(P("link_to_outside_dir/"), &st));

    if (outside) {
        char rel[1024];
        snprintf(rel, sizeof rel, "%s%s", UP, outside + (outside[0] == '/'));
        via_link("absolute symlink to FERRY_OUTSIDE", outside, "outside_abs", P("outside_abs"), O_RDONLY);
        via_link("relative symlink to FERRY_OUTSIDE", rel, "outside_rel", P("outside_rel"), O_RDONLY);
        via_link("write-open through symlink to FERRY_OUTSIDE", rel, "outside_rel", P("outside_rel"), O_RDWR);
    }
}

static void hard_links(void) {
    unlink(P("hl_abs"));
    int r = link("/etc/passwd", P("hl_abs"));
    outcome("hard link /etc/passwd", r);
    if (plant(UP "etc/passwd", "rel_out") < 0) {
        refused("hard link through symlink", errno);
    } else {
        unlink(P("hl_follow"));
        r = linkat(AT_FDCWD, P("rel_out"), AT_FDCWD, P("hl_follow"), AT_SYMLINK_FOLLOW);
        /* A link to the symlink itself (follow ignored) is no escape. */
        if (r == 0) r = open_close(P("hl_follow"), O_RDONLY | O_NOFOLLOW);
        outcome("hard link through symlink", r);
    }
    if (plant("/etc", "link_to_outside_dir") < 0) {
        refused("hard link under symlinked dir", errno);
    } else {
        unlink(P("hl_dir"));
        outcome("hard link under symlinked dir", link(P("link_to_outside_dir/passwd"), P("hl_dir")));
    }
    if (plant(UP "etc", "rel_dir_out") < 0) {
        refused("hard link under relative symlinked dir", errno);
    } else {
        unlink(P("hl_rdir"));
        outcome("hard link under relative symlinked dir", link(P("rel_dir_out/passwd"), P("hl_rdir")));
    }
}

/* Moves and creations, aimed at OUT_DIR (the parent of FERRY_OUTSIDE, or /tmp). */
static void mutations(const char *out_dir, const char *outside) {
    put(P("f"), "f\n");
    int r = rename(P("f"), P("../fs_escape_f"));
    outcome("rename to ../", r);
    if (r == 0) rename(P("../fs_escape_f"), P("f"));
    char rel[1024];
    snprintf(rel, sizeof rel, "%s%s", UP, out_dir + (out_dir[0] == '/'));
    const char *links[2][2] = {{out_dir, "out_dir_abs"}, {rel, "out_dir_rel"}};
    const char *kinds[2] = {"absolute", "relative"};
    for (int i = 0; i < 2; i++) {
        char name[128], path[1024];
        if (plant(links[i][0], links[i][1]) < 0) {
            int err = errno;
            snprintf(name, sizeof name, "rename into %s symlinked dir", kinds[i]);
            refused(name, err);
            snprintf(name, sizeof name, "mkdir under %s symlinked dir", kinds[i]);
            refused(name, err);
            snprintf(name, sizeof name, "create under %s symlinked dir", kinds[i]);
            refused(name, err);
            continue;
        }
        snprintf(name, sizeof name, "rename into %s symlinked dir", kinds[i]);
        snprintf(path, sizeof path, "%s/fs_escape_f", links[i][1]);
        r = rename(P("f"), P(path));
        outcome(name, r);
        if (r == 0) rename(P(path), P("f"));
        snprintf(name, sizeof name, "mkdir under %s symlinked dir", kinds[i]);
        snprintf(path, sizeof path, "%s/fs_escape_dir", links[i][1]);
        r = mkdir(P(path), 0755);
        outcome(name, r);
        if (r == 0) rmdir(P(path));
        snprintf(name, sizeof name, "create under %s symlinked dir", kinds[i]);
        snprintf(path, sizeof path, "%s/fs_escape_created", links[i][1]);
        r = open_close(P(path), O_WRONLY | O_CREAT);
        outcome(name, r);
        if (r >= 0) unlink(P(path));
    }
    /* O_CREAT through a dangling symlink whose target is outside. */
    char target[1024];
    snprintf(target, sizeof target, "%s/fs_escape_dangling", out_dir);
    r = plant(target, "dangling_abs");
    if (r == 0) r = open_close(P("dangling_abs"), O_WRONLY | O_CREAT);
    outcome("create through absolute dangling symlink", r);
    if (r >= 0) unlink(P("out_dir_rel/fs_escape_dangling"));
    snprintf(target, sizeof target, "%s/fs_escape_dangling", rel);
    r = plant(target, "dangling_rel");
    if (r == 0) r = open_close(P("dangling_rel"), O_WRONLY | O_CREAT);
    outcome("create through relative dangling symlink", r);
    if (r >= 0) unlink(P("out_dir_rel/fs_escape_dangling"));
    if (outside) {
        /* Renaming the outside file in: put back at once if it worked. */
        const char *base = strrchr(outside, '/');
        char from[1024];
        snprintf(from, sizeof from, "out_dir_rel/%s", base ? base + 1 : outside);
        r = plant(rel, "out_dir_rel");
        if (r == 0) r = rename(P(from), P("stolen"));
        outcome("rename FERRY_OUTSIDE in", r);
        if (r == 0) rename(P("stolen"), P(from));
    }
}

/* Magic links of /proc as symlink targets. */
static void proc_links(void) {
    via_link("symlink to /proc/self/root/etc/passwd", "/proc/self/root/etc/passwd", "proc_root",
             P("proc_root"), O_RDONLY);
    via_link("relative symlink to /proc/self/root/etc/passwd", UP "proc/self/root/etc/passwd",
             "proc_root_rel", P("proc_root_rel"), O_RDONLY);
    via_link("symlink to /proc/self/cwd/", "/proc/self/cwd", "proc_cwd", P("proc_cwd/"),
             O_RDONLY | O_DIRECTORY);
    const char *what = "/proc/self/fd/N symlinks (N=0..255, absolute and relative)";
    int first = 0, mixed = 0, opened = 0;
    for (int rel = 0; rel < 2; rel++) {
        for (int n = 0; n < 256; n++) {
            char target[128];
            snprintf(target, sizeof target, "%sproc/self/fd/%d", rel ? UP : "/", n);
            errno = 0;
            int r = plant(target, "proc_fd");
            if (r == 0) r = open_close(P("proc_fd"), O_RDONLY);
            if (r >= 0) {
                if (opened++ == 0) printf("%s: ESCAPED\n", what);
                printf("  opened through %s\n", target);
                continue;
            }
            if (first == 0) first = errno;
            mixed |= errno != first;
        }
    }
    if (opened) {
        escapes++;
    } else {
        printf("%s: refused (errno %d)%s\n", what, first, mixed ? " and others" : "");
    }
}

static void inside(void) {
    put(P("inside.txt"), "inside\n");
    mkdir(P("a"), 0755);
    int r = plant("inside.txt", "in_link");
    if (r == 0) r = plant("../inside.txt", "a/in_up");
    if (r == 0 && (starts_with(P("in_link"), "inside") != 1 || starts_with(P("a/in_up"), "inside") != 1)) {
        r = -1;
    }
    if (r == 0) printf("inside symlink: ok\n");
    else printf("inside symlink: FAIL (errno %d)\n", errno);
}

static void swap(int rounds) {
    struct stat st;
    if (lstat(P("swap"), &st) != 0) {
        printf("swap: skipped (no %s/swap)\n", dir);
        return;
    }
    int no = 0, in = 0, out = 0;
    for (int i = 0; i < rounds; i++) {
        int r = starts_with(P("swap"), MARKER);
        if (r < 0) no++;
        else if (r) out++;
        else in++;
    }
    printf("swap: refused %d, read inside %d, escaped %d\n", no, in, out);
    if (out) escapes++;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: fs_escape DIR [ROUNDS]\n");
        return 2;
    }
    dir = argv[1];
    int rounds = argc == 3 ? atoi(argv[2]) : 2000;
    const char *outside = getenv("FERRY_OUTSIDE");
    if (outside && !*outside) outside = NULL;
    char out_dir[1024] = "/tmp";
    if (outside && strrchr(outside, '/') && strrchr(outside, '/') != outside) {
        snprintf(out_dir, sizeof out_dir, "%.*s", (int)(strrchr(outside, '/') - outside), outside);
    }
    dirfd_ = open(dir, O_RDONLY | O_DIRECTORY);
    if (dirfd_ < 0) {
        printf("cannot open %s: errno %d\n", dir, errno);
        return 255;
    }
    dotdot();
    absolute();
    symlinks(outside);
    hard_links();
    mutations(out_dir, outside);
    proc_links();
    inside();
    swap(rounds);
    printf("escapes=%d\n", escapes);
    return escapes;
}
