package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
)

// brokenDisk fails every read: a temporary file that cannot be read back.
type brokenDisk struct{}

var errBrokenDisk = errors.New("input/output error (injected)")

func (brokenDisk) ReadAt([]byte, int64) (int, error) { return 0, errBrokenDisk }

// memStore is an empty mem store and a put that fails the test on error.
func memStore(t *testing.T) (storage.Store, func(key, body string)) {
	st := storage.NewMem(nil)
	return st, func(key, body string) {
		t.Helper()
		if _, err := st.Put(context.Background(), key, strings.NewReader(body), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestViewReadFailures: a View keeps the walk (edges) and the narinfo
// table (hashes, ages) in temporary files; when reading one back fails,
// every method that needs it returns the error (it panicked before).
func TestViewReadFailures(t *testing.T) {
	ctx := context.Background()
	st, put := memStore(t)
	lib, app := testHash(1), testHash(2)
	narinfo := func(h nixcache.Hash, name string, refs ...string) {
		put(nixcache.NarInfoKey(h), fmt.Sprintf("StorePath: /nix/store/%s-%s\nURL: nar/%s.nar\nFileSize: 1\nNarSize: 1\nReferences: %s\n",
			h, name, h, strings.Join(refs, " ")))
		put("nar/"+h.String()+".nar", "n")
	}
	put("nix-cache-info", "StoreDir: /nix/store\n")
	narinfo(lib, "lib")
	narinfo(app, "app", lib.String()+"-lib")
	put("gcroots/host", "/nix/store/"+app.String()+"-app\n")

	open := func() *View {
		v, err := NewView(ctx, st, Options{Grace: -1, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		return v
	}
	libID := func(v *View) PathID {
		id, ok := v.Lookup(lib)
		if !ok || !v.Reachable(id) {
			t.Fatal("lib is not listed and kept")
		}
		return id
	}

	t.Run("walk", func(t *testing.T) {
		v := open()
		appID, _ := v.Lookup(app)
		if edges, err := v.Edges(appID); err != nil {
			t.Fatal(err)
		} else {
			n := 0
			for range edges {
				n++
			}
			if n != 1 {
				t.Fatalf("app has %d edges, want 1", n)
			}
		}
		v.memo.recMem, v.memo.records = nil, brokenDisk{}
		if _, err := v.Edges(appID); !errors.Is(err, errBrokenDisk) {
			t.Fatalf("Edges: %v, want the read error", err)
		}
		if _, _, err := v.ShortestChain(libID(v), nil); !errors.Is(err, errBrokenDisk) {
			t.Fatalf("ShortestChain: %v, want the read error", err)
		}
		if _, err := v.Removal(ctx, []nixcache.Hash{lib}); !errors.Is(err, errBrokenDisk) {
			t.Fatalf("Removal: %v, want the read error", err)
		}
	})
	t.Run("narinfo table", func(t *testing.T) {
		v := open()
		id := libID(v)
		if h, err := v.Hash(id); err != nil || h != lib {
			t.Fatalf("Hash: %v, %v", h, err)
		}
		v.ix.nis.f.Close() // the table's temporary file: reads fail from now on
		if _, err := v.Hash(id); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Hash: %v, want the read error", err)
		}
		if _, _, err := v.ModTime(id); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("ModTime: %v, want the read error", err)
		}
		if _, _, err := v.ShortestChain(id, nil); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("ShortestChain: %v, want the read error", err)
		}
		if _, err := v.Removal(ctx, []nixcache.Hash{app}); !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Removal: %v, want the read error", err)
		}
	})
}

// TestViewWritesNoKeepSets: the walk's keep sets are a prune's (decide
// reads them); a View (kiss why, kiss rm) collected them into temporary
// files it never read, about 20 bytes per reachable path held until Close.
func TestViewWritesNoKeepSets(t *testing.T) {
	ctx := context.Background()
	st, put := memStore(t)
	lib, drv := testHash(1), testHash(3)
	put("nix-cache-info", "StoreDir: /nix/store\n")
	// A deriver not in the cache and a build log: both keep sets get a record.
	put(nixcache.NarInfoKey(lib), fmt.Sprintf("StorePath: /nix/store/%s-lib\nURL: nar/%s.nar\nFileSize: 1\nNarSize: 1\nReferences: \nDeriver: %s-lib.drv\n", lib, lib, drv))
	put("nar/"+lib.String()+".nar", "n")
	put("log/"+drv.String()+"-lib.drv", "log")
	put("gcroots/host", "/nix/store/"+lib.String()+"-lib\n")
	v, err := NewView(ctx, st, Options{Grace: -1, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if id, ok := v.Lookup(lib); !ok || !v.Reachable(id) {
		t.Fatal("lib is not listed and kept (test setup)")
	}
	v.tmp.mu.Lock()
	defer v.tmp.mu.Unlock()
	var names []string
	for _, f := range v.tmp.files {
		names = append(names, f.Name())
		if strings.Contains(f.Name(), "keep-") {
			t.Errorf("the View made the keep-set file %s", f.Name())
		}
	}
	t.Logf("temporary files: %q", names)
}
