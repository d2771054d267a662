/*
 * sqlite_file — SQLite (the libsqlite3-sys amalgamation, built with its real
 * unix VFS) on a database file, through the WASI filesystem.
 *
 * Usage: sqlite_file DB_PATH ROWS [BATCH=1000]
 *   e.g. sqlite_file /data/db.sqlite 300000
 *
 * Opens (creates) DB_PATH with the "unix-none" VFS (no locks: wasi has no
 * fcntl locks; one connection only), rollback journal in the default DELETE
 * mode (DB_PATH-journal next to it), synchronous=FULL, no mmap, temp store in
 * memory. Creates table t(id, k, v) with an index on k and inserts ROWS rows of
 * pseudo-random content (a fixed LCG) in transactions of BATCH rows, printing
 * `batch N rows=M` after each commit (M read back from the database). Then
 * prints `count=`, `sum_k=`, `checksum=` (FNV-1a over SELECT ... ORDER BY k,
 * id), `integrity_check: ok`, `page_count=` and `sqlite_file done`.
 * Deterministic for a given ROWS and BATCH.
 *
 * The program does not resume: if the table already holds rows (it was
 * started again on an existing database) it says so and exits 3. Ferry
 * restores memory and files together, so a migrated program never sees that.
 * Exits 1 on any SQLite error.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

static sqlite3 *db;
static uint64_t lcg = 0x2545F4914F6CDD1DULL;

static uint32_t next_random(void) {
  lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
  return (uint32_t)(lcg >> 33);
}

static void die(const char *what) {
  printf("sqlite error in %s: %s (%d)\n", what, sqlite3_errmsg(db), sqlite3_extended_errcode(db));
  exit(1);
}

static void exec(const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    printf("sqlite error in %s: %s\n", sql, err ? err : "?");
    exit(1);
  }
}

static sqlite3_stmt *prepare(const char *sql) {
  sqlite3_stmt *stmt;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) die(sql);
  return stmt;
}

/* The first column of the first row of SQL, as an integer. */
static int64_t query_int(const char *sql) {
  sqlite3_stmt *stmt = prepare(sql);
  if (sqlite3_step(stmt) != SQLITE_ROW) die(sql);
  int64_t v = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  return v;
}

static const char *query_text(const char *sql, char *buf, size_t cap) {
  sqlite3_stmt *stmt = prepare(sql);
  if (sqlite3_step(stmt) != SQLITE_ROW) die(sql);
  const unsigned char *t = sqlite3_column_text(stmt, 0);
  snprintf(buf, cap, "%s", t ? (const char *)t : "(null)");
  sqlite3_finalize(stmt);
  return buf;
}

static uint64_t fnv(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3 || argc > 4 || atol(argv[2]) < 0 || (argc == 4 && atol(argv[3]) <= 0)) {
    fprintf(stderr, "usage: sqlite_file DB_PATH ROWS [BATCH=1000]\n");
    return 2;
  }
  const long rows = atol(argv[2]);
  const long batch = argc == 4 ? atol(argv[3]) : 1000;

  if (sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix-none") != SQLITE_OK) {
    die("open");
  }
  char text[256];
  printf("sqlite %s vfs=unix-none journal_mode=%s\n", sqlite3_libversion(),
         query_text("PRAGMA journal_mode", text, sizeof text));
  exec("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL);"
       "CREATE INDEX IF NOT EXISTS t_k ON t(k);");
  int64_t existing = query_int("SELECT count(*) FROM t");
  if (existing != 0) {
    printf("database already holds %lld rows: this program does not resume\n", (long long)existing);
    return 3;
  }

  sqlite3_stmt *insert = prepare("INSERT INTO t(id, k, v) VALUES (?1, ?2, ?3)");
  sqlite3_stmt *max_id = prepare("SELECT max(id) FROM t");
  static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
  long id = 0;
  for (long n = 1; id < rows; n++) {
    exec("BEGIN");
    for (long i = 0; i < batch && id < rows; i++) {
      char v[96];
      size_t len = 20 + next_random() % 60;
      for (size_t j = 0; j < len; j++) v[j] = letters[next_random() % 26];
      ++id;
      sqlite3_bind_int64(insert, 1, id);
      sqlite3_bind_int64(insert, 2, next_random() % 1000000);
      sqlite3_bind_text(insert, 3, v, (int)len, SQLITE_TRANSIENT);
      if (sqlite3_step(insert) != SQLITE_DONE) die("insert");
      sqlite3_reset(insert);
    }
    exec("COMMIT");
    if (sqlite3_step(max_id) != SQLITE_ROW) die("max(id)");
    printf("batch %ld rows=%lld\n", n, (long long)sqlite3_column_int64(max_id, 0));
    sqlite3_reset(max_id);
  }
  sqlite3_finalize(insert);
  sqlite3_finalize(max_id);

  printf("count=%lld\n", (long long)query_int("SELECT count(*) FROM t"));
  printf("sum_k=%lld\n", (long long)query_int("SELECT coalesce(sum(k), 0) FROM t"));
  printf("k_below_1000=%lld\n", (long long)query_int("SELECT count(*) FROM t WHERE k < 1000"));
  sqlite3_stmt *all = prepare("SELECT id, k, v FROM t ORDER BY k, id");
  uint64_t h = 0xcbf29ce484222325ULL;
  int step;
  while ((step = sqlite3_step(all)) == SQLITE_ROW) {
    char line[160];
    int len = snprintf(line, sizeof line, "%lld|%lld|%s\n", (long long)sqlite3_column_int64(all, 0),
                       (long long)sqlite3_column_int64(all, 1), (const char *)sqlite3_column_text(all, 2));
    h = fnv(h, line, (size_t)len);
  }
  if (step != SQLITE_DONE) die("select");
  sqlite3_finalize(all);
  printf("checksum=%016llx\n", (unsigned long long)h);

  const char *check = query_text("PRAGMA integrity_check", text, sizeof text);
  printf("integrity_check: %s\n", check);
  printf("page_count=%lld\n", (long long)query_int("PRAGMA page_count"));
  if (sqlite3_close(db) != SQLITE_OK) die("close");
  printf("sqlite_file done\n");
  return strcmp(check, "ok") == 0 ? 0 : 1;
}
