package pilot

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/scalebox-hpc/scalebox/apptainer"
)

// agentHello is the agent's first line on its stdout: what it found
// inside the container.
type agentHello struct {
	Scripts map[string]string `json:"scripts"`
	// OS is the image's PRETTY_NAME, for logs.
	OS string `json:"os,omitempty"`
}

// RunAgent is `scalebox agent`, the slot agent inside a module container.
// It reads one JSON request per line from in, runs it with the workspace
// code the host runtime uses, and answers one JSON response per line on
// out, until in ends. SIGTERM or SIGINT stop the script running at that
// moment (the pilot is stopping); the agent itself goes on until its
// stdin closes, so teardown.sh still runs.
func RunAgent(in io.Reader, out io.Writer) error {
	w := &workspace{
		env:     dedupEnv(os.Environ()),
		d:       containerDirs,
		scripts: lookupScripts(os.Getenv, apptainer.AppBin, ShareBin),
		missing: fmt.Sprintf("no %s in %s or %s of the image (or $%s)", RunScript, apptainer.AppBin, ShareBin, scriptOverride[RunScript]),
	}
	bw := bufio.NewWriter(out)
	enc := json.NewEncoder(bw)
	send := func(v any) error {
		if err := enc.Encode(v); err != nil {
			return err
		}
		return bw.Flush()
	}
	if err := send(agentHello{Scripts: w.scripts, OS: prettyName("/etc/os-release")}); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	var mu sync.Mutex
	var cancelRun context.CancelFunc
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	go func() {
		for range sigs {
			mu.Lock()
			if cancelRun != nil {
				cancelRun()
			}
			mu.Unlock()
		}
	}()
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var r request
		if err := dec.Decode(&r); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("agent: read request: %w", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		mu.Lock()
		cancelRun = cancel
		mu.Unlock()
		resp := w.run(ctx, r)
		mu.Lock()
		cancelRun = nil
		mu.Unlock()
		cancel()
		if err := send(resp); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
}

// prettyName is PRETTY_NAME (else NAME) from an os-release file.
func prettyName(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var name string
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"'`)
		switch k {
		case "PRETTY_NAME":
			return v
		case "NAME":
			name = v
		}
	}
	return name
}
