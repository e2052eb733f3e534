package pilot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Interface files a task leaves in WORK_DIR (Scalebox names).
const (
	SinkTasksFile     = "sink-tasks.txt"
	TimestampsFile    = "timestamps.txt"
	InputFilesFile    = "input-files.txt"
	OutputFilesFile   = "output-files.txt"
	RemovedFilesFile  = "removed-files.txt"
	AuxoutFile        = "auxout.txt"
	TaskExecFile      = "task-exec.yaml"
	InputMessagesFile = "input-messages.txt"
	// DeferredOpsFile holds `semaphore|variable ... --on-success` changes,
	// one JSON StateOp per line (ours; Scalebox has no equivalent).
	DeferredOpsFile = "deferred-ops.jsonl"
	// OpSeqFile numbers a task's state changes for their request ids.
	OpSeqFile = ".scalebox-op-seq"
)

var interfaceFiles = map[string]bool{
	SinkTasksFile: true, TimestampsFile: true, InputFilesFile: true, OutputFilesFile: true, RemovedFilesFile: true,
	AuxoutFile: true, TaskExecFile: true, InputMessagesFile: true, DeferredOpsFile: true, OpSeqFile: true,
}

// Bounds on what a task's files may contribute to its report.
const (
	maxAuxout      = 64 << 10
	maxSinkTasks   = 64 << 20
	maxSmallFile   = 1 << 20
	maxMessages    = 1 << 20
	maxDeferredOps = 10000
)

// Outputs is what the interface files said.
type Outputs struct {
	Messages []dataflow.Message
	// DataOnNode: a built-in wrote to a tier of this node (as stage_out
	// to local: does).
	DataOnNode  bool
	Timestamps  []dataflow.Timestamp
	Deferred    []dataflow.StateOp
	InputBytes  int64
	OutputBytes int64
	Auxout      string
	// StatusCode overrides the exit code when task-exec.yaml sets it.
	StatusCode *int
	// Problems are errors that fail the task: a bad sink-tasks line or
	// deferred change would otherwise lose or garble output.
	Problems []string
	// Warnings are kept with the exec record and fail nothing.
	Warnings []string
}

// clearInterfaceFiles removes what a previous task left, so one task's
// messages can never be sent for the next.
func clearInterfaceFiles(dir string) error {
	names, err := dirNames(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if interfaceFiles[name] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// readOutputs reads the interface files present in dir. It never fails
// as a whole: each bad file becomes a Problem naming file and line.
// readOutputs reads and removes the interface files of a finished task.
// Files listed in removed-files.txt are deleted only inside removable: the
// work dir and the module's writable volumes. A listed path elsewhere is
// left alone and noted, so a module (or a typo) cannot make the pilot
// delete what the task could not name as its own.
func readOutputs(dir string, removable ...string) Outputs {
	var out Outputs
	names, err := dirNames(dir)
	if err != nil {
		out.Problems = append(out.Problems, fmt.Sprintf("read work dir: %v", err))
		return out
	}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		present[name] = true
	}
	// Remove what was read when done, so the next task starts clean
	// without listing the directory again.
	defer func() {
		for name := range present {
			if interfaceFiles[name] {
				os.Remove(filepath.Join(dir, name))
			}
		}
	}()
	path := func(name string) string { return filepath.Join(dir, name) }
	if present[SinkTasksFile] {
		f, err := openRaw(path(SinkTasksFile), 0)
		if err == nil {
			msgs, perr := dataflow.ParseMessages(SinkTasksFile, io.LimitReader(f, maxSinkTasks))
			f.Close()
			if perr != nil {
				out.Problems = append(out.Problems, perr.Error())
			}
			if len(msgs) > maxMessages {
				out.Problems = append(out.Problems, fmt.Sprintf("%s: %d messages, the limit is %d", SinkTasksFile, len(msgs), maxMessages))
				msgs = nil
			}
			out.Messages = msgs
		} else {
			out.Problems = append(out.Problems, err.Error())
		}
	}
	if present[TimestampsFile] {
		if data, err := readSmall(path(TimestampsFile)); err == nil {
			ts, problems := ParseTimestamps(data)
			out.Timestamps = ts
			out.Warnings = append(out.Warnings, problems...)
		}
	}
	if present[InputFilesFile] {
		out.InputBytes = sumFiles(dir, path(InputFilesFile))
	}
	if present[OutputFilesFile] {
		out.OutputBytes = sumFiles(dir, path(OutputFilesFile))
	}
	if present[AuxoutFile] {
		if data, err := readSmall(path(AuxoutFile)); err == nil {
			if len(data) > maxAuxout {
				data = data[:maxAuxout]
			}
			out.Auxout = string(data)
		}
	}
	if present[TaskExecFile] {
		if data, err := readSmall(path(TaskExecFile)); err == nil {
			var te struct {
				StatusCode  *int   `yaml:"statusCode"`
				InputBytes  *int64 `yaml:"inputBytes"`
				OutputBytes *int64 `yaml:"outputBytes"`
			}
			if err := yaml.Unmarshal(data, &te); err != nil {
				out.Warnings = append(out.Warnings, fmt.Sprintf("%s: %v", TaskExecFile, err))
			} else {
				out.StatusCode = te.StatusCode
				if te.InputBytes != nil {
					out.InputBytes = *te.InputBytes
				}
				if te.OutputBytes != nil {
					out.OutputBytes = *te.OutputBytes
				}
			}
		}
	}
	if present[DeferredOpsFile] {
		if data, err := readSmall(path(DeferredOpsFile)); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(data))
			n := 0
			for sc.Scan() {
				n++
				if strings.TrimSpace(sc.Text()) == "" {
					continue
				}
				var op dataflow.StateOp
				if err := json.Unmarshal(sc.Bytes(), &op); err != nil {
					out.Problems = append(out.Problems, fmt.Sprintf("%s:%d: %v", DeferredOpsFile, n, err))
					continue
				}
				if len(out.Deferred) < maxDeferredOps {
					out.Deferred = append(out.Deferred, op)
				}
			}
		}
	}
	if present[RemovedFilesFile] {
		out.Warnings = append(out.Warnings, removeListed(dir, path(RemovedFilesFile), removable)...)
	}
	return out
}

// listedPaths reads `path` or `path,size` lines; relative paths are
// relative to the work dir.
func listedPaths(dir, file string) (paths []string, sizes []int64) {
	data, err := readSmall(file)
	if err != nil {
		return nil, nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p, sz, hasSize := strings.Cut(line, ",")
		size := int64(-1)
		if hasSize {
			if n, err := strconv.ParseInt(strings.TrimSpace(sz), 10, 64); err == nil && n >= 0 {
				size = n
			}
		}
		p = strings.TrimSpace(p)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		paths = append(paths, p)
		sizes = append(sizes, size)
	}
	return paths, sizes
}

// sumFiles adds the sizes of listed files and directories (recursively).
// maxSizeWalk bounds the directory entries visited to size the listed
// input and output files of one task: a listed "/" or a huge tree must not
// stall the pilot (or a parallel filesystem). Past it the sum is partial.
const maxSizeWalk = 10000

func sumFiles(dir, file string) int64 {
	paths, sizes := listedPaths(dir, file)
	var total int64
	visited := 0
	for i, p := range paths {
		if sizes[i] >= 0 {
			total += sizes[i]
			continue
		}
		filepath.WalkDir(p, func(_ string, d fs.DirEntry, err error) error {
			if visited++; visited > maxSizeWalk {
				return filepath.SkipAll
			}
			if err != nil {
				return nil
			}
			if d.Type().IsRegular() {
				if info, err := d.Info(); err == nil {
					total += info.Size()
				}
			}
			return nil
		})
	}
	return total
}

// removeListed deletes the paths of removed-files.txt, except the work dir
// itself and its parents: a stray "." or "/" must not take the slot down.
func removeListed(dir, file string, removable []string) (refused []string) {
	paths, _ := listedPaths(dir, file)
	roots := append([]string{dir}, removable...)
	for _, p := range paths {
		p = filepath.Clean(p)
		if rel, err := filepath.Rel(p, dir); err == nil && !strings.HasPrefix(rel, "..") {
			continue // the work dir or one of its parents
		}
		if !within(p, roots) {
			refused = append(refused, fmt.Sprintf("%s: %s is outside the work dir and the module's writable volumes; not removed", RemovedFilesFile, p))
			continue
		}
		os.RemoveAll(p)
	}
	return refused
}

// within is true when p is strictly inside one of roots.
func within(p string, roots []string) bool {
	for _, r := range roots {
		if r == "" {
			continue
		}
		rel, err := filepath.Rel(filepath.Clean(r), p)
		if err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			return true
		}
	}
	return false
}

var timestampLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
}

func parseTime(s string) (time.Time, bool) {
	s = strings.TrimSpace(s)
	for _, l := range timestampLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// ParseTimestamps reads `label,timestamp` or `timestamp,label` lines.
func ParseTimestamps(data []byte) ([]dataflow.Timestamp, []string) {
	var out []dataflow.Timestamp
	var problems []string
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		a, b, ok := strings.Cut(line, ",")
		if !ok {
			problems = append(problems, fmt.Sprintf("%s:%d: want label,timestamp or timestamp,label", TimestampsFile, i+1))
			continue
		}
		if t, ok := parseTime(b); ok {
			out = append(out, dataflow.Timestamp{Label: strings.TrimSpace(a), Time: t})
		} else if t, ok := parseTime(a); ok {
			out = append(out, dataflow.Timestamp{Label: strings.TrimSpace(b), Time: t})
		} else {
			problems = append(problems, fmt.Sprintf("%s:%d: no timestamp in %q", TimestampsFile, i+1, line))
		}
	}
	return out, problems
}
