package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/storage"
)

// startEphemeral serves a fresh mem store on an ephemeral endpoint until
// the test ends (or stop).
func startEphemeral(t *testing.T) (st storage.Store, base string, stop func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st = storage.NewMem(nil)
	base, stop, err := gateway.Ephemeral(ctx, st, gateway.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop(context.Background()) })
	return st, base, stop
}

func TestEphemeral(t *testing.T) {
	st, base, stop := startEphemeral(t)
	if !strings.HasPrefix(base, "http://127.0.0.1:") || len(base) < len("http://127.0.0.1:1/")+32 {
		t.Fatalf("base URL %q", base)
	}
	host := base[:strings.LastIndexByte(base, '/')]
	p := newPath("e")
	put := func(url string, body string) int {
		req, _ := http.NewRequest("PUT", url, strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := put(host+"/"+p.narKey(), "x"); c != 404 {
		t.Fatalf("write without the secret prefix: %d", c)
	}
	if c := put(host+"/wrongtoken/"+p.narKey(), "x"); c != 404 {
		t.Fatalf("write with a wrong prefix: %d", c)
	}
	if c := put(base+"/"+p.narinfoKey(), string(p.narinfo())); c != 409 {
		t.Fatalf("ephemeral endpoint does not validate: %d", c)
	}
	if c := put(base+"/"+p.narKey(), string(p.narBody())); c != 201 {
		t.Fatalf("NAR: %d", c)
	}
	if c := put(base+"/"+p.narinfoKey(), string(p.narinfo())); c != 201 {
		t.Fatalf("narinfo: %d", c)
	}
	res, err := http.Get(base + "/nix-cache-info")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("nix-cache-info %v %v", res, err)
	}
	res.Body.Close()
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if _, err := http.Get(base + "/nix-cache-info"); err == nil {
		t.Fatal("endpoint still answers after stop")
	}

	// cancelling ctx stops it too
	ctx2, cancel2 := context.WithCancel(context.Background())
	base2, stop2, err := gateway.Ephemeral(ctx2, st, gateway.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer stop2(context.Background())
	cancel2()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := http.Get(base2 + "/nix-cache-info"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("endpoint still answers after its context ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The ephemeral endpoint's URL, token included, is on the command line of
// the command kiss with-lock runs (nix copy --to "$KISS_STORE"), which any
// local user can read. So a connection is served only when the process
// that opened it runs as kiss's user: another user who read the URL gets
// the connection closed, and writes nothing.
func TestEphemeralOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects once as kiss's user and once as nobody (setpriv)")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux) to connect as another user")
	}
	st, base, _ := startEphemeral(t)
	ctx := context.Background()
	p := newPath("intruder")
	// A tiny HTTP client in this test binary, run as a given user.
	put := func(uid string) (string, error) {
		args := []string{"-test.run=^TestEphemeralPutHelper$"}
		cmd := exec.Command(os.Args[0], args...)
		if uid != "" {
			cmd = exec.Command(setpriv, append([]string{"--reuid=" + uid, "--regid=" + uid, "--clear-groups", os.Args[0]}, args...)...)
		}
		cmd.Env = append(os.Environ(), "KISS_TEST_PUT_URL="+base+"/"+p.narKey())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := put("65534"); err == nil || !strings.Contains(out, "PUT failed") {
		t.Fatalf("PUT as nobody: %v\n%s", err, out)
	}
	if _, err := st.Stat(ctx, p.narKey()); err == nil {
		t.Fatal("a PUT by another user was stored")
	}
	if out, err := put(""); err != nil || !strings.Contains(out, "PUT 201") {
		t.Fatalf("PUT as kiss's own user: %v\n%s", err, out)
	}
}

// TestEphemeralPutHelper is TestEphemeralOtherUserRefused's client: it
// PUTs to $KISS_TEST_PUT_URL and prints what happened.
func TestEphemeralPutHelper(t *testing.T) {
	url := os.Getenv("KISS_TEST_PUT_URL")
	if url == "" {
		t.Skip("run by TestEphemeralOtherUserRefused")
	}
	req, _ := http.NewRequest("PUT", url, strings.NewReader("NAR"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Println("PUT failed:", err)
		os.Exit(1)
	}
	res.Body.Close()
	fmt.Println("PUT", res.StatusCode)
}
