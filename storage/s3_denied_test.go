package storage_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/storage"
)

// A HEAD or GET that S3 denies (as AWS does for a missing key when the
// caller lacks s3:ListBucket) is ErrAccessDenied with an explanation, never
// ErrNotFound: "missing" would let a writer or pruner act on a guess.
func TestS3DeniedReadIsAccessDenied(t *testing.T) {
	st, err := openFakeS3(t, "cache", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusForbidden)
		if r.Method != http.MethodHead { // a HEAD's 403 has no body, hence no code
			w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`))
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, statErr := st.Stat(ctx, "gcroots/.lock/prune")
	_, getErr := st.Get(ctx, "0000000000000000000000000000000a.narinfo")
	_, rangeErr := st.GetRange(ctx, "nar/x.nar", 0, 0)
	for name, err := range map[string]error{"stat": statErr, "get": getErr, "range": rangeErr} {
		if !errors.Is(err, storage.ErrAccessDenied) || errors.Is(err, storage.ErrNotFound) || storage.IsTransient(err) {
			t.Errorf("%s: %v: want ErrAccessDenied, permanent, not ErrNotFound", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "s3:ListBucket") {
			t.Errorf("%s: %q does not explain the 403 of a missing key", name, err)
		}
	}
}

// TestS3BadCredentialsFailAtOpen: S3 answers a HeadBucket signed with
// unknown or wrong keys with a bare 403 (a HEAD has no body), which Open
// also gets from a role that may not HeadBucket and so lets pass. Keys the
// server does not accept (InvalidAccessKeyId, SignatureDoesNotMatch) must
// still fail at Open, as docs/storage.md says, not at the first read of a
// command (kiss prune: exit 4 "roots unavailable"; kiss verify: exit 3).
func TestS3BadCredentialsFailAtOpen(t *testing.T) {
	for _, code := range []string{"InvalidAccessKeyId", "SignatureDoesNotMatch"} {
		t.Run(code, func(t *testing.T) {
			_, err := openFakeS3(t, "cache", "", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				if r.Method != http.MethodHead {
					w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>no</Message></Error>`))
				}
			}))
			if err == nil {
				t.Fatal("Open accepted credentials the server rejects")
			}
			if !strings.Contains(err.Error(), code) || !strings.Contains(err.Error(), "credentials") || errors.Is(err, storage.ErrInvalidURL) {
				t.Errorf("Open: %v: want the server's %s, an explanation, not a bad URL", err, code)
			}
		})
	}
}
