package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// SmallTmpfs mounts a tmpfs of size bytes on a fresh temp directory and
// unmounts it when the test ends: a full filesystem on demand. It needs
// root (CAP_SYS_ADMIN): without it the test is skipped locally and fails
// in CI (KISS_REQUIRE_TMPFS too).
func SmallTmpfs(t testing.TB, size int64) string {
	t.Helper()
	SkipShort(t, "a test that mounts a tmpfs")
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		requireComponent(t, "mounting a tmpfs (root)", err, "KISS_REQUIRE_TMPFS")
	}
	// Registered after TempDir's own cleanup, so it runs first: unmounted
	// before the directory is removed.
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("testenv: unmount %s: %v", dir, err)
		}
	})
	return dir
}

// FillTmpfs fills the filesystem at dir until a write fails with ENOSPC,
// leaving keep bytes free (roughly: tmpfs counts whole pages), and returns
// the filler's path.
func FillTmpfs(t testing.TB, dir string, keep int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n := free - keep; n > 0 {
		if _, err := f.Write(make([]byte, n)); err != nil {
			t.Fatalf("testenv: filling %s: %v", dir, err)
		}
	}
	return p
}
