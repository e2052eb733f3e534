//go:build !cgo

package broker

// Without cgo there is no SQLite (mattn/go-sqlite3 fails at open), so
// there is nothing to configure; the binary still builds, as the static
// agent that runs inside containers does.
func registerQPSG() error { return nil }
