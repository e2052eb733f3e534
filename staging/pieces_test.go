package staging_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/scalebox-hpc/scalebox/staging"
)

// recorder keeps what is written to it and the largest single write.
type recorder struct {
	bytes.Buffer
	largest, calls int
	failAt         int // the call that fails (1-based); 0: none
}

func (r *recorder) Write(p []byte) (int, error) {
	r.calls++
	if r.calls == r.failAt {
		return 0, errors.New("disk full")
	}
	r.largest = max(r.largest, len(p))
	return r.Buffer.Write(p)
}

func TestWriteInPiecesBoundsEachWrite(t *testing.T) {
	for _, n := range []int{0, 1, staging.PieceSize, staging.PieceSize + 1, staging.ChunkSize + 3} {
		data := bytes.Repeat([]byte{'x', 'y', 'z'}, n/3+1)[:n]
		var r recorder
		if err := staging.WriteInPieces(&r, data); err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if !bytes.Equal(r.Bytes(), data) {
			t.Errorf("%d bytes: wrote %d bytes that differ from the input", n, r.Len())
		}
		if r.largest > staging.PieceSize {
			t.Errorf("%d bytes: a write of %d bytes, more than %d", n, r.largest, staging.PieceSize)
		}
		if want := (n + staging.PieceSize - 1) / staging.PieceSize; r.calls != want {
			t.Errorf("%d bytes: %d writes, want %d", n, r.calls, want)
		}
	}
}

func TestWriteInPiecesStopsAtTheFirstError(t *testing.T) {
	r := recorder{failAt: 2}
	err := staging.WriteInPieces(&r, make([]byte, 3*staging.PieceSize))
	if err == nil || err.Error() != "disk full" {
		t.Fatalf("err = %v, want the writer's error", err)
	}
	if r.calls != 2 || r.Len() != staging.PieceSize {
		t.Errorf("%d calls, %d bytes written; want 2 calls, one piece", r.calls, r.Len())
	}
}
