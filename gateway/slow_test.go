package gateway_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
)

// TestSlowClientsAreCut: an upload that stalls is cut after TransferGrace
// (plus size/MinRate) and nothing is stored, with and without a
// Content-Length; the server keeps serving others.
func TestSlowClientsAreCut(t *testing.T) {
	e := newEnv(t, nil, gateway.Config{Auth: gateway.Open{}, TransferGrace: 300 * time.Millisecond, MinRate: 1 << 20})
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, chunked := range []bool{false, true} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hdr := "Content-Length: 100000\r\n"
		if chunked {
			hdr = "Transfer-Encoding: chunked\r\n"
		}
		fmt.Fprintf(c, "PUT /nar/slow.nar HTTP/1.1\r\nHost: x\r\n%s\r\n", hdr)
		if chunked {
			fmt.Fprintf(c, "a\r\n0123456789\r\n")
		} else {
			io.WriteString(c, "0123456789")
		}
		// then stall
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		start := time.Now()
		resp, _ := io.ReadAll(c)
		took := time.Since(start)
		c.Close()
		if took > 5*time.Second {
			t.Fatalf("chunked=%v: stalled upload held the connection for %v", chunked, took)
		}
		if !strings.HasPrefix(string(resp), "HTTP/1.1 408") {
			t.Fatalf("chunked=%v: stalled upload answered %q, want 408", chunked, firstLine(string(resp)))
		}
		t.Logf("chunked=%v: cut after %v, answer %q", chunked, took.Round(time.Millisecond), firstLine(string(resp)))
	}
	if e.has("nar/slow.nar") {
		t.Fatal("a stalled upload was stored")
	}
	wantCode(t, "others still served", e.do("GET", "/nix-cache-info", nil), 200)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\r\n")
	return l
}
