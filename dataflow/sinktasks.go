package dataflow

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// MaxLineBytes bounds one sink-tasks or start-task line.
const MaxLineBytes = 1 << 20

// ParseMessageLine parses one line of sink-tasks.txt (or of a start_task
// FILE). The accepted forms are
//
//	body
//	body,{headers}
//	{json-body}
//	{json-body},{headers}
//	module,body
//	module,body,{headers}
//	module,{json-body},{headers}
//
// A line without a module leaves Message.Module empty, meaning the sender's
// default sink.
func ParseMessageLine(line string) (Message, error) {
	line = strings.TrimSpace(line)
	if line == "" {
		return Message{}, fmt.Errorf("empty line")
	}
	if line[0] == '{' {
		body, rest, err := splitJSON(line)
		if err != nil {
			return Message{}, fmt.Errorf("JSON body: %w", err)
		}
		m := Message{Body: body}
		if rest == "" {
			return m, nil
		}
		if !strings.HasPrefix(rest, ",") {
			return Message{}, fmt.Errorf("expected ',' after JSON body, got %q", clip(rest))
		}
		h, err := ParseHeaders(rest[1:])
		if err != nil {
			return Message{}, err
		}
		m.Headers = h
		return m, nil
	}
	first, rest, ok := strings.Cut(line, ",")
	if !ok {
		return Message{Body: first}, nil
	}
	first = strings.TrimSpace(first)
	rest = strings.TrimSpace(rest)
	if first == "" {
		return Message{}, fmt.Errorf("empty field before ','")
	}
	if strings.HasPrefix(rest, "{") {
		val, after, err := splitJSON(rest)
		if err != nil {
			return Message{}, fmt.Errorf("JSON after %q: %w", first, err)
		}
		if after == "" {
			// body,{headers}
			h, err := ParseHeaders(val)
			if err != nil {
				return Message{}, err
			}
			return Message{Body: first, Headers: h}, nil
		}
		// module,{json-body},{headers}
		if !strings.HasPrefix(after, ",") {
			return Message{}, fmt.Errorf("expected ',' after JSON body, got %q", clip(after))
		}
		h, err := ParseHeaders(after[1:])
		if err != nil {
			return Message{}, err
		}
		return Message{Module: first, Body: val, Headers: h}, nil
	}
	body, hdr, hasHdr := strings.Cut(rest, ",")
	body = strings.TrimSpace(body)
	if body == "" {
		return Message{}, fmt.Errorf("empty body after module %q", first)
	}
	m := Message{Module: first, Body: body}
	if hasHdr {
		h, err := ParseHeaders(hdr)
		if err != nil {
			return Message{}, err
		}
		m.Headers = h
	}
	return m, nil
}

// splitJSON returns the JSON object at the start of s (compacted) and what follows it.
func splitJSON(s string) (string, string, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", "", err
	}
	off := dec.InputOffset()
	return buf.String(), strings.TrimSpace(s[off:]), nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// LineError is a problem on one line of a message file.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string {
	return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
}

func (e *LineError) Unwrap() error { return e.Err }

// ParseMessages reads message lines from r, skipping blank lines and '#'
// comments. Every bad line is reported (as *LineError values joined); the
// good ones are still returned so a caller can decide.
func ParseMessages(name string, r io.Reader) ([]Message, error) {
	sc := bufio.NewScanner(r)
	// Most sink-tasks files are a line or two: start small (the scanner
	// grows the buffer up to MaxLineBytes), since this runs per task.
	sc.Buffer(make([]byte, 4096), MaxLineBytes)
	var msgs []Message
	var errs []error
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m, err := ParseMessageLine(line)
		if err != nil {
			errs = append(errs, &LineError{File: name, Line: n, Err: err})
			continue
		}
		msgs = append(msgs, m)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &LineError{File: name, Line: n + 1, Err: err})
	}
	return msgs, joinErrors(errs)
}

// FormatMessageLine is the inverse of ParseMessageLine, used by `task add`
// inside a slot. Bodies containing a comma or starting with '{' that are not
// JSON cannot be represented and are refused.
func FormatMessageLine(m Message) (string, error) {
	if m.Body == "" {
		return "", fmt.Errorf("empty body")
	}
	if strings.ContainsAny(m.Body, "\n\r") {
		return "", fmt.Errorf("body contains a newline")
	}
	if m.Body[0] == '{' {
		if !json.Valid([]byte(m.Body)) {
			return "", fmt.Errorf("body starts with '{' but is not JSON")
		}
	} else if strings.Contains(m.Body, ",") {
		return "", fmt.Errorf("body %q contains a comma", clip(m.Body))
	}
	var b strings.Builder
	if m.Module != "" {
		if strings.ContainsAny(m.Module, ",{") {
			return "", fmt.Errorf("module name %q is invalid", m.Module)
		}
		b.WriteString(m.Module)
		b.WriteByte(',')
	}
	b.WriteString(m.Body)
	if len(m.Headers) > 0 {
		b.WriteByte(',')
		b.WriteString(m.Headers.JSON())
	} else if m.Module != "" && m.Body[0] == '{' {
		b.WriteString(",{}")
	}
	return b.String(), nil
}
