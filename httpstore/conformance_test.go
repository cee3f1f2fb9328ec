package httpstore_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gateway"
	"github.com/kiss-cache/kiss/httpstore"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/storage/storagetest"
)

// suiteNS is where the suite's objects go through the gateway: `kiss
// storage check` probes, the one kind the gateway lets a writer put with any
// body, read back and delete.
const suiteNS = ".kiss/check/conformance/"

// largeNARs need more than a probe's 64 KiB; as NARs they are streamed with
// no limit (the gateway deletes no NAR over HTTP, and the suite never
// deletes these).
var largeNARs = []string{"nar/large.nar", "nar/old.nar", "nar/new.nar",
	"nar/cancelled-small.nar", "nar/cancelled-multipart.nar", "nar/cancelled-conditional.nar"}

// gatewayKeys maps the suite's keys into the shapes the gateway accepts:
// leases stay leases, large objects are NARs, everything else is a probe.
var gatewayKeys = storagetest.Mapping{
	Key: func(k string) string {
		if rest, ok := strings.CutPrefix(k, "gcroots/.lock/"); ok && rest != "" && !strings.Contains(rest, "/") {
			return k
		}
		if slices.Contains(largeNARs, k) {
			return k
		}
		return suiteNS + k
	},
	Name: func(k string) (string, bool) {
		if name, ok := strings.CutPrefix(k, suiteNS); ok {
			return name, true
		}
		return k, !strings.HasPrefix(k, ".kiss/")
	},
}

// TestConformance runs the storage conformance suite on this driver,
// against a gateway over a file:// store on a loopback port.
func TestConformance(t *testing.T) {
	storagetest.RunMapped(t, func(t *testing.T) storage.Store {
		backing, err := storage.OpenFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		gw, err := gateway.New(backing, gateway.Config{Auth: gateway.Open{}})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- gateway.Serve(ctx, ln, gw, nil, time.Second) }()
		c, err := httpstore.Open("http://"+ln.Addr().String(), httpstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		return c
	}, gatewayKeys)
}
