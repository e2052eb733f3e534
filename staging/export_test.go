package staging

import "time"

// SFTPDials counts the SSH connections made by this process.
func SFTPDials() int64 { return sftpDials.Load() }

// SetSFTPIdle sets how long an idle connection is kept (0: not kept)
// until the test ends.
func SetSFTPIdle(t interface{ Cleanup(func()) }, d time.Duration) {
	old := sftpIdle
	sftpIdle = d
	t.Cleanup(func() { sftpIdle = old })
}

// SFTPConnOf is the connection under an sftp store, to compare two.
func SFTPConnOf(s Store) any { return s.(*SFTPStore).conn }

// BreakSFTP closes the connection under an sftp store, as a network
// failure would.
func BreakSFTP(s Store) { s.(*SFTPStore).conn.Close() }

// WriteInPieces and PieceSize are how Copy writes a chunk to a local file.
var WriteInPieces = writeInPieces

const PieceSize = pieceSize

// ZstdWireBytes is what a ?compress=zstd store moved, compressed.
func ZstdWireBytes(s Store) int64 { return s.(*zstdStore).wire.Load() }
