package testenv

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// ChromiumEnv is headless Chromium (Debian's chromium) with a fresh profile
// and every background connection off: the machine's network is closed,
// and a test page must render from what it carries.
type ChromiumEnv struct {
	t   testing.TB
	Bin string
	dir string
}

// Chromium returns a headless Chromium. It skips under -short, and skips
// (locally) or fails (CI, KISS_REQUIRE_CHROMIUM) when chromium is missing.
func Chromium(t testing.TB) *ChromiumEnv {
	t.Helper()
	SkipShort(t, "chromium")
	bin, err := exec.LookPath("chromium")
	if err != nil {
		requireComponent(t, "chromium", err, "KISS_REQUIRE_CHROMIUM")
	}
	return &ChromiumEnv{t: t, Bin: bin, dir: t.TempDir()}
}

func (c *ChromiumEnv) run(args ...string) []byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	profile, err := os.MkdirTemp(c.dir, "profile-")
	if err != nil {
		c.t.Fatal(err)
	}
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile}
	cmd := exec.CommandContext(ctx, c.Bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+c.dir, "XDG_CONFIG_HOME="+filepath.Join(c.dir, "config"), "XDG_CACHE_HOME="+filepath.Join(c.dir, "cache"))
	var stderr []byte
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = ee.Stderr
	}
	if err != nil {
		c.t.Fatalf("testenv: chromium %v: %v\n%s", args, err, stderr)
	}
	return out
}

// DumpDOM loads url and returns the DOM after load (--dump-dom).
func (c *ChromiumEnv) DumpDOM(url string) string {
	c.t.Helper()
	return string(c.run("--dump-dom", url))
}

// Screenshot loads url in a width×height window and writes a PNG to file.
func (c *ChromiumEnv) Screenshot(url, file string, width, height int) {
	c.t.Helper()
	c.run("--hide-scrollbars", "--window-size="+strconv.Itoa(width)+","+strconv.Itoa(height), "--screenshot="+file, url)
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		c.t.Fatalf("testenv: chromium wrote no screenshot %s: %v", file, err)
	}
}
