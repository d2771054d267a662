/*
 * sqlite_bench — an in-memory SQLite workload (SQLite's own amalgamation, as
 * the libsqlite3-sys crate bundles it).
 *
 * Usage: sqlite_bench [rounds=8] [rows=4000]
 *
 * Each round fills a table with `rows` pseudo-random orders in one
 * transaction, indexes it, runs aggregate, join, sort, LIKE and update
 * queries over it, and prints `round N rows R checksum C`; the last line is
 * `sqlite done checksum C`. Deterministic: a fixed PRNG, no clock (the VFS
 * below answers a fixed time and fixed randomness).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

/* ---- a VFS for in-memory databases only (SQLITE_OS_OTHER) -------------- */

static int vfs_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file, int flags, int *out_flags) {
  (void)vfs; (void)name; (void)file; (void)flags; (void)out_flags;
  return SQLITE_CANTOPEN;
}
static int vfs_delete(sqlite3_vfs *vfs, const char *name, int sync) {
  (void)vfs; (void)name; (void)sync;
  return SQLITE_IOERR_DELETE;
}
static int vfs_access(sqlite3_vfs *vfs, const char *name, int flags, int *result) {
  (void)vfs; (void)name; (void)flags;
  *result = 0;
  return SQLITE_OK;
}
static int vfs_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  (void)vfs;
  sqlite3_snprintf(n, out, "%s", name);
  return SQLITE_OK;
}
static int vfs_randomness(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs;
  for (int i = 0; i < n; i++) out[i] = (char)(i * 37 + 11);
  return n;
}
static int vfs_sleep(sqlite3_vfs *vfs, int micros) {
  (void)vfs;
  return micros;
}
static int vfs_current_time(sqlite3_vfs *vfs, double *now) {
  (void)vfs;
  *now = 2461000.5; /* a fixed Julian day */
  return SQLITE_OK;
}
static int vfs_last_error(sqlite3_vfs *vfs, int n, char *out) {
  (void)vfs; (void)n; (void)out;
  return 0;
}

static sqlite3_vfs memory_only_vfs = {
    .iVersion = 1,
    .szOsFile = sizeof(sqlite3_file),
    .mxPathname = 512,
    .zName = "memory-only",
    .xOpen = vfs_open,
    .xDelete = vfs_delete,
    .xAccess = vfs_access,
    .xFullPathname = vfs_full_pathname,
    .xRandomness = vfs_randomness,
    .xSleep = vfs_sleep,
    .xCurrentTime = vfs_current_time,
    .xGetLastError = vfs_last_error,
};

int sqlite3_os_init(void) { return sqlite3_vfs_register(&memory_only_vfs, 1); }
int sqlite3_os_end(void) { return SQLITE_OK; }

/* ---- the workload -------------------------------------------------------- */

static unsigned long long prng_state = 0x9E3779B97F4A7C15ull;
static unsigned prng(void) {
  prng_state ^= prng_state << 13;
  prng_state ^= prng_state >> 7;
  prng_state ^= prng_state << 17;
  return (unsigned)(prng_state >> 11);
}

static sqlite3 *db;
static unsigned long long checksum = 1469598103934665603ull;

static void mix(const unsigned char *bytes, size_t n) {
  for (size_t i = 0; i < n; i++) {
    checksum ^= bytes[i];
    checksum *= 1099511628211ull;
  }
}

static void die(const char *what) {
  fprintf(stderr, "sqlite_bench: %s: %s\n", what, sqlite3_errmsg(db));
  exit(1);
}

static void exec(const char *sql) {
  char *error = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &error) != SQLITE_OK) {
    fprintf(stderr, "sqlite_bench: %s: %s\n", sql, error ? error : "?");
    exit(1);
  }
}

/* Runs a query and folds every column of every row into the checksum. */
static long query(const char *sql) {
  sqlite3_stmt *stmt;
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) die(sql);
  long rows = 0;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    int columns = sqlite3_column_count(stmt);
    for (int c = 0; c < columns; c++) {
      const unsigned char *text = sqlite3_column_text(stmt, c);
      if (text) mix(text, (size_t)sqlite3_column_bytes(stmt, c));
    }
    rows++;
  }
  if (rc != SQLITE_DONE) die(sql);
  sqlite3_finalize(stmt);
  return rows;
}

static const char *const words[] = {"apple", "birch", "cedar", "delta", "ember", "fjord", "grain", "harbor",
                                    "iris",  "juniper", "kelp", "lumen", "maple", "nectar", "orbit", "pine"};

static void fill(int rows) {
  exec("BEGIN");
  sqlite3_stmt *insert;
  if (sqlite3_prepare_v2(db, "INSERT INTO orders(customer, item, quantity, price, note) VALUES (?, ?, ?, ?, ?)", -1,
                         &insert, NULL) != SQLITE_OK)
    die("prepare insert");
  char note[64];
  for (int i = 0; i < rows; i++) {
    unsigned r = prng();
    snprintf(note, sizeof note, "%s-%s-%u", words[r % 16], words[(r >> 4) % 16], r % 1000);
    sqlite3_bind_int(insert, 1, (int)(r % 500));
    sqlite3_bind_int(insert, 2, (int)((r >> 9) % 200));
    sqlite3_bind_int(insert, 3, (int)(1 + (r >> 17) % 20));
    sqlite3_bind_double(insert, 4, (double)(prng() % 100000) / 100.0);
    sqlite3_bind_text(insert, 5, note, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(insert) != SQLITE_DONE) die("insert");
    sqlite3_reset(insert);
  }
  sqlite3_finalize(insert);
  exec("COMMIT");
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 8;
  int rows = argc > 2 ? atoi(argv[2]) : 4000;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) die("open");
  exec("CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, region INTEGER)");
  exec("BEGIN");
  for (int i = 0; i < 500; i++) {
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO customers VALUES (%d, 'customer-%d', %d)", i, i * 7919 % 1000, i % 12);
    exec(sql);
  }
  exec("COMMIT");
  for (int round = 1; round <= rounds; round++) {
    exec("DROP TABLE IF EXISTS orders");
    exec("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer INTEGER, item INTEGER, quantity INTEGER, "
         "price REAL, note TEXT)");
    fill(rows);
    exec("CREATE INDEX orders_by_customer ON orders(customer, item)");
    long seen = 0;
    seen += query("SELECT customer, count(*), sum(quantity), round(sum(quantity * price), 2) FROM orders "
                  "GROUP BY customer ORDER BY customer");
    seen += query("SELECT c.region, count(*), round(avg(o.price), 4) FROM orders o JOIN customers c ON "
                  "c.id = o.customer GROUP BY c.region ORDER BY c.region");
    seen += query("SELECT id, note FROM orders WHERE note LIKE '%ma%' ORDER BY price DESC, id LIMIT 200");
    seen += query("SELECT item, max(price), min(price) FROM orders WHERE customer BETWEEN 100 AND 300 "
                  "GROUP BY item HAVING count(*) > 3 ORDER BY 2 DESC");
    exec("UPDATE orders SET price = price * 1.01 WHERE quantity > 10");
    exec("DELETE FROM orders WHERE item % 7 = 0");
    seen += query("SELECT count(*), round(sum(price), 2), group_concat(DISTINCT substr(note, 1, 3)) FROM orders");
    seen += query("SELECT o1.customer, count(*) FROM orders o1 WHERE o1.price > (SELECT avg(price) FROM orders "
                  "o2 WHERE o2.customer = o1.customer) GROUP BY o1.customer ORDER BY 2 DESC, 1 LIMIT 20");
    printf("round %d rows %ld checksum %016llx\n", round, seen, checksum);
    fflush(stdout);
  }
  sqlite3_close(db);
  printf("sqlite done checksum %016llx\n", checksum);
  return 0;
}
