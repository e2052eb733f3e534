package dataflow

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMessageLine(t *testing.T) {
	tests := []struct {
		line string
		want Message
		err  bool
	}{
		{"body", Message{Body: "body"}, false},
		{"b1,{\"k\":\"v\"}", Message{Body: "b1", Headers: Headers{"k": "v"}}, false},
		{`{"x":1}`, Message{Body: `{"x":1}`}, false},
		{`{"x": 1 },{"k":"v"}`, Message{Body: `{"x":1}`, Headers: Headers{"k": "v"}}, false},
		{"mod,body", Message{Module: "mod", Body: "body"}, false},
		{"mod,body,{\"n\":3,\"ok\":true}", Message{Module: "mod", Body: "body", Headers: Headers{"n": "3", "ok": "true"}}, false},
		{`mod,{"x":[1,2]},{"k":"v"}`, Message{Module: "mod", Body: `{"x":[1,2]}`, Headers: Headers{"k": "v"}}, false},
		{"  spaced body  ", Message{Body: "spaced body"}, false},
		{"b,{\"k\":{\"nested\":1}}", Message{}, true},
		{"{not json", Message{}, true},
		{",body", Message{}, true},
		{"mod,", Message{}, true},
		{`{"a":1}x`, Message{}, true},
	}
	for _, tt := range tests {
		got, err := ParseMessageLine(tt.line)
		if (err != nil) != tt.err {
			t.Errorf("%q: err = %v, want error %v", tt.line, err, tt.err)
			continue
		}
		if !tt.err && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q = %+v, want %+v", tt.line, got, tt.want)
		}
	}
}

func TestParseMessagesReportsLineNumbers(t *testing.T) {
	msgs, err := ParseMessages("sink-tasks.txt", strings.NewReader("a\n\n# c\nb,{bad\nc\n"))
	if len(msgs) != 2 {
		t.Fatalf("got %d good messages, want 2", len(msgs))
	}
	if err == nil || !strings.Contains(err.Error(), "sink-tasks.txt:4:") {
		t.Fatalf("error %v does not name line 4", err)
	}
}

func TestFormatRoundTrip(t *testing.T) {
	for _, m := range []Message{
		{Body: "x"}, {Module: "m", Body: "x", Headers: Headers{"a": "b,c"}}, {Module: "m", Body: `{"j":1}`},
		{Body: `{"j":1}`, Headers: Headers{"q": "\"quoted\""}}, {Body: "with spaces and 'quotes'"},
	} {
		line, err := FormatMessageLine(m)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		got, err := ParseMessageLine(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if len(m.Headers) == 0 {
			m.Headers = nil
		}
		if len(got.Headers) == 0 {
			got.Headers = nil
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %+v -> %q -> %+v", m, line, got)
		}
	}
	if _, err := FormatMessageLine(Message{Body: "a,b"}); err == nil {
		t.Fatal("a body with a comma was accepted")
	}
}
