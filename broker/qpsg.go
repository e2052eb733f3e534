//go:build cgo

package broker

// SQLite re-plans a prepared statement on every new binding when its plan
// looked at a bound value: a parameter compared while proving a partial
// index usable, a LIMIT ?, an ORDER BY next to "col = ?". The dispatch
// query does all three, so each lease re-parsed and re-planned it (25 µs
// of 28 on the bench VM; perf showed sqlite3RunParser). The query planner
// stability guarantee (SQLITE_DBCONFIG_ENABLE_QPSG) turns that off: one
// plan per statement, kept in the statement cache. Our plans never need
// the values (the indexes they use are fixed by the WHERE text).
//
// mattn/go-sqlite3 has no db_config call, so an auto-extension sets it on
// every connection whose URI carries scalebox_qpsg=1; SQLite ignores the
// parameter otherwise, and other databases in the process are untouched.

/*
#define SCALEBOX_DBCONFIG_ENABLE_QPSG 1007 // SQLITE_DBCONFIG_ENABLE_QPSG in sqlite3.h
#define SCALEBOX_CONFIG_MEMSTATUS 9 // SQLITE_CONFIG_MEMSTATUS
typedef struct sqlite3 sqlite3;
typedef struct sqlite3_api_routines sqlite3_api_routines;
int sqlite3_auto_extension(void (*)(void));
int sqlite3_config(int, ...);
int sqlite3_db_config(sqlite3 *, int, ...);
const char *sqlite3_db_filename(sqlite3 *, const char *);
int sqlite3_uri_boolean(const char *, const char *, int);

static int scalebox_qpsg(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
	const char *file = sqlite3_db_filename(db, "main");
	if (file == 0 || !sqlite3_uri_boolean(file, "scalebox_qpsg", 0)) return 0;
	return sqlite3_db_config(db, SCALEBOX_DBCONFIG_ENABLE_QPSG, 1, (int *)0);
}

static int scalebox_register_qpsg(void) {
	// Before the first use of SQLite in the process (auto_extension below
	// initializes it): no memory statistics. With them every malloc and
	// free inside SQLite takes a global mutex (pthread mutex calls were
	// 7 % of the broker's CPU in perf at batch 100). Nothing here reads
	// them; if SQLite was already initialized this is refused and changes
	// nothing.
	sqlite3_config(SCALEBOX_CONFIG_MEMSTATUS, 0);
	return sqlite3_auto_extension((void (*)(void))scalebox_qpsg);
}
*/
import "C"

import (
	"fmt"
	"sync"
)

var registerQPSG = sync.OnceValue(func() error {
	if rc := C.scalebox_register_qpsg(); rc != 0 {
		return fmt.Errorf("register the query planner setting with SQLite: code %d", int(rc))
	}
	return nil
})
