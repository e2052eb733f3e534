// Command delayproxy forwards TCP connections with a fixed one-way delay
// each way, so bench/staging/run.sh can measure transfers over a link
// with a WAN's round trip on a machine without netem (RTT_MS=20). It
// buffers without bound: it models latency, not bandwidth.
package main

import (
	"flag"
	"log"
	"net"
	"time"
)

type segment struct {
	due  time.Time
	data []byte
}

// forward copies src to dst, each segment delivered delay after it was read.
func forward(dst, src *net.TCPConn, delay time.Duration) {
	q := make(chan segment, 1<<16)
	go func() {
		defer dst.CloseWrite()
		for s := range q {
			time.Sleep(time.Until(s.due))
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
	flag.Parse()
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
			go forward(t.(*net.TCPConn), c.(*net.TCPConn), *delay)
			forward(c.(*net.TCPConn), t.(*net.TCPConn), *delay)
		}()
	}
}
