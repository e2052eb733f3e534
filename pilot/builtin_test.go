package pilot

import (
	"strings"
	"testing"
)

func TestJoinURL(t *testing.T) {
	for _, tc := range []struct{ base, rel, want, err string }{
		{"sftp://me@site:22/data", "a/b.txt", "sftp://me@site:22/data/a/b.txt", ""},
		{"sftp://me@site:22/data/?compress=zstd", "a/b.txt", "sftp://me@site:22/data/a/b.txt?compress=zstd", ""},
		{"file:///shared/in/", "x", "file:///shared/in/x", ""},
		{"local:cache", "x", "local:cache/x", ""},
		{"sftp://me@site:22/data?compress=zstd", "../etc/passwd", "", `".." is not allowed`},
	} {
		u, err := joinURL(tc.base, tc.rel)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("joinURL(%q, %q) = %v, %v; want an error saying %q", tc.base, tc.rel, u, err, tc.err)
			}
		case err != nil || u.String() != tc.want:
			t.Errorf("joinURL(%q, %q) = %v, %v; want %s", tc.base, tc.rel, u, err, tc.want)
		}
	}
}
