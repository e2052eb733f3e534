package staging_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

// writeSizes is a store whose part files record the largest single write
// (only the copy loop writes a part; the state file is written beside it).
type writeSizes struct {
	staging.Store
	largest *int
}

func (s writeSizes) Append(ctx context.Context, name string) (staging.Writer, error) {
	w, err := s.Store.Append(ctx, name)
	if err != nil || !strings.HasSuffix(name, ".part") {
		return w, err
	}
	return sizedWriter{w, s.largest}, nil
}

type sizedWriter struct {
	staging.Writer
	largest *int
}

func (w sizedWriter) Write(p []byte) (int, error) {
	*w.largest = max(*w.largest, len(p))
	return w.Writer.Write(p)
}

// A chunk reaches a local file in writes of at most PieceSize: one write
// of a whole chunk made the kernel use 2 MiB page-cache folios, which a
// VM with free page reporting must fault in from its host again.
func TestCopyWritesLocalFilesInPieces(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	dir, dstDir := openDir(t)
	data := stagingtest.Pattern(2*staging.ChunkSize + 5)
	stagingtest.Put(t, src, "in.bin", data)
	var largest int
	if _, err := staging.Copy(ctx, src, "in.bin", writeSizes{dir, &largest}, "out.bin", nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dstDir, "out.bin"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("copy differs from the source (%d of %d bytes, %v)", len(got), len(data), err)
	}
	if largest == 0 || largest > staging.PieceSize {
		t.Errorf("largest write %d bytes, want 1..%d", largest, staging.PieceSize)
	}
}

type failingWriter struct{ calls, failAt int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.calls++; w.calls == w.failAt {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteInPiecesStopsAtTheFirstError(t *testing.T) {
	w := failingWriter{failAt: 2}
	err := staging.WriteInPieces(&w, make([]byte, 3*staging.PieceSize))
	if err == nil || err.Error() != "disk full" || w.calls != 2 {
		t.Fatalf("err = %v after %d writes, want the writer's error at the second", err, w.calls)
	}
}
