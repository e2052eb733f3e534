// Command delayproxy forwards TCP connections with a fixed one-way delay
// each way, so bench/staging/run.sh can measure transfers over a link
// with a WAN's round trip on a machine without netem (RTT_MS=20), and
// optionally a bandwidth each way shared by all its connections, as one
// WAN link is (-rate). It buffers without bound.
package main

import (
	"flag"
	"log"
	"net"
	"sync"
	"time"
)

// link is one direction's bandwidth: a segment leaves when the ones
// before it, on any connection, have had their time on the wire.
type link struct {
	mu   sync.Mutex
	rate float64 // bytes per second; 0 = unlimited
	free time.Time
}

// wait blocks until n more bytes may leave.
func (l *link) wait(n int) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	// Up to burst of unused time is credited, so a sleep that overshot
	// (by up to a millisecond or so) does not lower the rate.
	const burst = 20 * time.Millisecond
	now := time.Now()
	if l.free.Before(now.Add(-burst)) {
		l.free = now.Add(-burst)
	}
	l.free = l.free.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	until := l.free
	l.mu.Unlock()
	time.Sleep(time.Until(until))
}

type segment struct {
	due  time.Time
	data []byte
}

// forward copies src to dst, each segment delivered delay after it was read.
func forward(dst, src *net.TCPConn, delay time.Duration, l *link) {
	q := make(chan segment, 1<<16)
	go func() {
		defer dst.CloseWrite()
		for s := range q {
			time.Sleep(time.Until(s.due))
			l.wait(len(s.data))
			if _, err := dst.Write(s.data); err != nil {
				return
			}
		}
	}()
	defer close(q)
	for {
		b := make([]byte, 64<<10)
		n, err := src.Read(b)
		if n > 0 {
			q <- segment{time.Now().Add(delay), b[:n]}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:3222", "address to listen on")
	target := flag.String("target", "127.0.0.1:2222", "address to forward to")
	delay := flag.Duration("delay", 10*time.Millisecond, "one-way delay (half the round trip)")
	rate := flag.Float64("rate", 0, "bandwidth each way in MB/s, shared by all connections (0: unlimited)")
	flag.Parse()
	up, down := &link{rate: *rate * 1e6}, &link{rate: *rate * 1e6}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			t, err := net.Dial("tcp", *target)
			if err != nil {
				log.Print(err)
				c.Close()
				return
			}
			go forward(t.(*net.TCPConn), c.(*net.TCPConn), *delay, up)
			forward(c.(*net.TCPConn), t.(*net.TCPConn), *delay, down)
		}()
	}
}
