package gateway_test

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/storage"
)

// syncBuffer is a log sink the gateway's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Issue 11 item 7: a full disk under the gateway is not a "store error"
// (502, logged at INFO): it is 507 Insufficient Storage, logged at ERROR
// and counted, so an operator finds out before the writers do.
func TestFullDiskIs507(t *testing.T) {
	mnt := testenv.SmallTmpfs(t, 1<<20)
	dir := filepath.Join(mnt, "cache")
	st, err := storage.OpenFile(dir, storage.CreateDir())
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	e := newEnv(t, st, gateway.Config{Auth: gateway.Open{}, Logger: slog.New(slog.NewTextHandler(&logs, nil))})

	big := newPath("big")
	r := e.do("PUT", "/"+big.narKey(), bytes.Repeat([]byte("x"), 2<<20))
	if r.code != 507 {
		t.Fatalf("PUT of 2 MiB onto a 1 MiB filesystem: %d %q, want 507", r.code, r.body)
	}
	// Nothing half-written is left behind, and the disk is usable again.
	if e.has(big.narKey()) {
		t.Fatal("the NAR that did not fit is there")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".kiss/tmp/*"))
	if len(left) > 0 {
		t.Fatalf("temp files left on the full disk: %v", left)
	}
	// A marker on a disk with no byte left: 507 too.
	testenv.FillTmpfs(t, mnt, 0)
	if r := e.do("PUT", "/gcroots/web1", big.marker()); r.code != 507 {
		t.Fatalf("marker onto a full disk: %d %q, want 507", r.code, r.body)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "no space left") {
		t.Fatalf("the full disk is not logged at error:\n%s", logs.String())
	}
	m := e.do("GET", "/metrics", nil)
	if !strings.Contains(m.body, `kiss_gateway_rejected_writes_total{reason="insufficient_storage"} 2`) {
		t.Fatalf("metrics do not count the full disk:\n%s", grepLines(m.body, "kiss_gateway_rejected"))
	}
	_ = os.Remove(filepath.Join(mnt, "filler"))
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
