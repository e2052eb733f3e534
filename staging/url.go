// Package staging moves task data between storage tiers: the shared
// filesystem (file://), the node's SSD tier (local:), its RAM tier (mem:)
// and remote sites (sftp://, next). Every tier is a Store behind one
// interface; Copy writes to a temporary name, verifies the bytes with
// SHA-256 and renames only then, and resumes an interrupted copy from the
// chunks already verified.
package staging

import (
	"fmt"
	"net/url"
	"path"
	"strconv"
	"strings"
)

// Schemes of staging URLs.
const (
	SchemeFile  = "file"  // file:///shared/path: the shared filesystem
	SchemeLocal = "local" // local:rel/path: the node's SSD tier
	SchemeMem   = "mem"   // mem:rel/path: the node's RAM tier (/dev/shm)
	SchemeSFTP  = "sftp"  // sftp://user@host:port/path: a remote site
)

// URL is a parsed staging URL. Path is slash-separated and clean; for
// file and sftp it is absolute, for local and mem relative to the tier.
type URL struct {
	Scheme string
	User   string
	Host   string
	Port   int
	Path   string
	// Compress is how an sftp site's file contents cross the link:
	// "" (as they are) or CompressZstd, from ?compress=zstd.
	Compress string
}

func (u URL) String() string {
	switch u.Scheme {
	case SchemeLocal, SchemeMem:
		return u.Scheme + ":" + u.Path
	case SchemeSFTP:
		s := fmt.Sprintf("sftp://%s@%s:%d%s", u.User, u.Host, u.Port, u.Path)
		if u.Compress != "" {
			s += "?compress=" + u.Compress
		}
		return s
	}
	return "file://" + u.Path
}

// ParseURL parses and confines a staging URL. A path with a ".." element,
// a NUL or a relative file:// path is refused here; symlinks leaving a
// tier's root are refused by the Store when the path is used.
func ParseURL(raw string) (URL, error) {
	bad := func(why string) (URL, error) { return URL{}, fmt.Errorf("staging URL %q: %s", raw, why) }
	scheme, rest, ok := strings.Cut(raw, ":")
	if !ok {
		return bad("want file://, local:, mem: or sftp://")
	}
	u := URL{Scheme: strings.ToLower(scheme)}
	var p string
	switch u.Scheme {
	case SchemeLocal, SchemeMem:
		p = strings.TrimPrefix(rest, "//")
	case SchemeFile:
		if !strings.HasPrefix(rest, "//") {
			return bad("file URLs are file:///absolute/path")
		}
		pu, err := url.Parse(raw)
		if err != nil {
			return bad(err.Error())
		}
		if pu.Host != "" && pu.Host != "localhost" {
			return bad("file URLs name no host (file:///path)")
		}
		p = pu.Path
		if !strings.HasPrefix(p, "/") {
			return bad("the path must be absolute")
		}
	case SchemeSFTP:
		pu, err := url.Parse(raw)
		if err != nil {
			return bad(err.Error())
		}
		if pu.User == nil || pu.User.Username() == "" || pu.Hostname() == "" {
			return bad("want sftp://user@host[:port]/path")
		}
		if _, has := pu.User.Password(); has {
			return bad("passwords do not belong in URLs; use a key or the agent")
		}
		u.User, u.Host, u.Port = pu.User.Username(), pu.Hostname(), 22
		if ps := pu.Port(); ps != "" {
			n, err := strconv.Atoi(ps)
			if err != nil || n <= 0 || n > 65535 {
				return bad("port " + ps)
			}
			u.Port = n
		}
		p = pu.Path
		if p == "" {
			p = "/"
		}
		for k, v := range pu.Query() {
			switch {
			case k == "compress" && len(v) == 1 && v[0] == CompressZstd:
				u.Compress = CompressZstd
			case k == "compress":
				return bad(fmt.Sprintf("compress=%s: the one compression is compress=zstd", strings.Join(v, ",")))
			default:
				return bad(fmt.Sprintf("unknown parameter %q (sftp URLs take ?compress=zstd)", k))
			}
		}
	default:
		return bad("unknown scheme " + scheme + ": want file, local, mem or sftp")
	}
	if strings.ContainsRune(p, 0) {
		return bad("NUL in path")
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return bad(`".." is not allowed in staging paths`)
		}
	}
	clean := path.Clean(p)
	if u.Scheme == SchemeLocal || u.Scheme == SchemeMem {
		clean = strings.TrimPrefix(clean, "/")
		if clean == "." {
			clean = ""
		}
	}
	u.Path = clean
	return u, nil
}

// JoinURL parses base/rel. The options an sftp base may end in
// (?compress=zstd) stay at the end, after rel.
func JoinURL(base, rel string) (URL, error) {
	query := ""
	if strings.HasPrefix(base, SchemeSFTP+":") {
		if i := strings.IndexByte(base, '?'); i >= 0 {
			base, query = base[:i], base[i:]
		}
	}
	return ParseURL(strings.TrimSuffix(base, "/") + "/" + rel + query)
}

// Rel is the URL's path relative to a store root at root (for file URLs:
// the shared data root). It refuses a path outside root.
func (u URL) Rel(root string) (string, error) {
	if u.Scheme == SchemeLocal || u.Scheme == SchemeMem {
		if u.Path == "" {
			return ".", nil
		}
		return u.Path, nil
	}
	root = path.Clean(root)
	if u.Path == root {
		return ".", nil
	}
	prefix := strings.TrimSuffix(root, "/") + "/"
	if !strings.HasPrefix(u.Path, prefix) {
		return "", fmt.Errorf("staging URL %s: outside the root %s", u, root)
	}
	return strings.TrimPrefix(u.Path, prefix), nil
}
