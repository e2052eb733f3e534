package staging

import (
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
)

// SFTP connections are kept open between stores. A slot that copies file
// after file (a dir-list, then one file-copy task per file) would
// otherwise pay, per file, a TCP connect, a key exchange, authentication
// and a new sftp-server process on the site: tens of milliseconds on a
// LAN, several round trips on a WAN. A connection serves one store at a
// time, so concurrent copies still get connections of their own (one
// connection is one TCP stream and one sftp-server on the site, which
// would cap their total throughput); an idle connection is closed after
// sftpIdle.
var sftpIdle = 30 * time.Second

// sftpConn is one SSH connection with its sftp session.
type sftpConn struct {
	key    string
	ssh    *ssh.Client
	client *sftp.Client
	dead   atomic.Bool
	timer  *time.Timer // while idle
}

var sftpPool struct {
	mu   sync.Mutex
	idle map[string][]*sftpConn
}

// sftpDials counts connections made (tests).
var sftpDials atomic.Int64

// sftpKey names the connections a store may share: same account on the
// same server, checked and authenticated the same way.
func sftpKey(u URL, auth SFTPAuth) string {
	return u.User + "\x00" + u.Host + "\x00" + strconv.Itoa(u.Port) + "\x00" + auth.KeyFile + "\x00" + auth.KnownHosts + "\x00" +
		auth.HostKey + "\x00" + os.Getenv("SSH_AUTH_SOCK")
}

// takeIdle returns an idle connection for key, if there is one.
func takeIdle(key string) *sftpConn {
	var dead []*sftpConn
	defer func() {
		for _, c := range dead {
			c.close()
		}
	}()
	sftpPool.mu.Lock()
	defer sftpPool.mu.Unlock()
	list := sftpPool.idle[key]
	for len(list) > 0 {
		c := list[len(list)-1]
		list = list[:len(list)-1]
		sftpPool.idle[key] = list
		if !c.timer.Stop() {
			continue // its idle time is up: being closed
		}
		if !c.dead.Load() {
			return c
		}
		dead = append(dead, c)
	}
	return nil
}

// newConn wraps a fresh connection; it is dropped from the pool when the
// server or the network ends it.
func newConn(key string, conn *ssh.Client, client *sftp.Client) *sftpConn {
	sftpDials.Add(1)
	c := &sftpConn{key: key, ssh: conn, client: client}
	go func() {
		conn.Wait()
		c.dead.Store(true)
	}()
	return c
}

// release gives a store's connection back: kept idle for the next store,
// or closed.
func (c *sftpConn) release() error {
	if c.dead.Load() || sftpIdle <= 0 {
		return c.close()
	}
	sftpPool.mu.Lock()
	defer sftpPool.mu.Unlock()
	if sftpPool.idle == nil {
		sftpPool.idle = map[string][]*sftpConn{}
	}
	c.timer = time.AfterFunc(sftpIdle, func() {
		sftpPool.mu.Lock()
		list := sftpPool.idle[c.key]
		for i, x := range list {
			if x == c {
				sftpPool.idle[c.key] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		sftpPool.mu.Unlock()
		c.close()
	})
	sftpPool.idle[c.key] = append(sftpPool.idle[c.key], c)
	return nil
}

func (c *sftpConn) close() error {
	err := c.client.Close()
	if err2 := c.ssh.Close(); err == nil {
		err = err2
	}
	return err
}
