package logbuf

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the flushing goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
	n  int // writes
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func TestInfoIsBufferedWarnIsNot(t *testing.T) {
	out := &syncBuffer{}
	w := NewWriter(out, 64<<10, time.Hour)
	defer w.Close()
	log := slog.New(Handler(slog.NewTextHandler(w, nil), w))
	for i := 0; i < 100; i++ {
		log.Info("request", "i", i)
	}
	if out.String() != "" {
		t.Fatalf("info records reached the writer before a flush: %q", out.String())
	}
	log.Warn("trouble")
	got := out.String()
	if strings.Count(got, "msg=request") != 100 || !strings.Contains(got, "msg=trouble") {
		t.Fatalf("a warning did not flush everything before it: %q", got)
	}
	if n := out.writes(); n != 1 {
		t.Errorf("%d writes for 101 records, want 1", n)
	}
}

func TestPeriodicFlushAndClose(t *testing.T) {
	out := &syncBuffer{}
	w := NewWriter(out, 64<<10, 10*time.Millisecond)
	w.Write([]byte("one\n"))
	deadline := time.Now().Add(5 * time.Second)
	for out.String() != "one\n" {
		if time.Now().After(deadline) {
			t.Fatal("not flushed within the interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.Write([]byte("two\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "one\ntwo\n" {
		t.Fatalf("Close did not flush: %q", out.String())
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRecordsStayWhole(t *testing.T) {
	out := &syncBuffer{}
	w := NewWriter(out, 16, time.Hour)
	defer w.Close()
	w.Write([]byte("0123456789\n")) // 11 bytes
	w.Write([]byte("abcdefghij\n")) // would not fit: the first is flushed alone
	if got := out.String(); got != "0123456789\n" {
		t.Fatalf("flushed %q, want the first record whole and alone", got)
	}
	w.Write([]byte(strings.Repeat("x", 40) + "\n")) // larger than the buffer
	if got := out.String(); !strings.HasSuffix(got, strings.Repeat("x", 40)+"\n") || !strings.Contains(got, "abcdefghij\n") {
		t.Fatalf("oversized record: %q", got)
	}
}
