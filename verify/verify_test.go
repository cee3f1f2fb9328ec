package verify_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	gonix "github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/kiss-cache/kiss/nixcache"
	"github.com/kiss-cache/kiss/storage"
	"github.com/kiss-cache/kiss/verify"
)

type fixture struct {
	t   *testing.T
	st  storage.Store
	sk  signature.SecretKey
	pub string
}

func newFixture(t *testing.T) *fixture {
	sk, pk, err := signature.GenerateKeypair("test-1", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, st: storage.NewMem(nil), sk: sk, pub: pk.String()}
}

func hashOf(name string) nixcache.Hash {
	sum := sha256.Sum256([]byte(name))
	var h nixcache.Hash
	copy(h[:], sum[:])
	return h
}

func base(name string) string { return hashOf(name).String() + "-" + name }

func (f *fixture) put(key string, body []byte) {
	f.t.Helper()
	if _, err := f.st.Put(context.Background(), key, bytes.NewReader(body), storage.PutOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// add writes a zstd-compressed NAR and a signed narinfo describing it, the
// signature made over go-nix's own fingerprint (an independent one).
func (f *fixture) add(name string, refs ...string) string {
	f.t.Helper()
	nar := []byte("nix-archive-1 fake contents of " + name)
	enc, _ := zstd.NewWriter(nil)
	file := enc.EncodeAll(nar, nil)
	narSum, fileSum := sha256.Sum256(nar), sha256.Sum256(file)
	narKey := "nar/" + nixhash.MustNewHash(nixhash.SHA256, fileSum[:]).Format(nixhash.NixBase32, false) + ".nar.zst"
	f.put(narKey, file)
	var rs []string
	for _, r := range refs {
		rs = append(rs, base(r))
	}
	ni := gonix.NarInfo{
		StorePath: "/nix/store/" + base(name), URL: narKey, Compression: "zstd",
		FileHash: nixhash.MustNewHashWithEncoding(nixhash.SHA256, fileSum[:], nixhash.NixBase32, true), FileSize: uint64(len(file)),
		NarHash: nixhash.MustNewHashWithEncoding(nixhash.SHA256, narSum[:], nixhash.NixBase32, true), NarSize: uint64(len(nar)),
		References: rs,
	}
	sig, err := f.sk.Sign(rand.Reader, ni.Fingerprint())
	if err != nil {
		f.t.Fatal(err)
	}
	ni.Signatures = []signature.Signature{sig}
	f.put(nixcache.NarInfoKey(hashOf(name)), []byte(ni.String()))
	return narKey
}

func kinds(r *verify.Report) string {
	var s []string
	for _, p := range r.Problems {
		s = append(s, string(p.Kind)+":"+strings.TrimSuffix(p.Key, ".narinfo")[:6])
	}
	return strings.Join(s, " ")
}

func short(name string) string { return hashOf(name).String()[:6] }

func TestVerify(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.add("lib")
	f.add("app", "lib")
	f.add("tool", "lib")
	rep, err := verify.Check(ctx, f.st, verify.Options{Deep: true, TrustedKeys: []string{f.pub}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.NarInfos != 3 || rep.NARs != 3 {
		t.Fatalf("intact cache: problems %q, %d narinfos, %d NARs", kinds(rep), rep.NarInfos, rep.NARs)
	}

	// Damage: a dangling reference, a missing NAR, a flipped NAR byte, a
	// truncated NAR, a narinfo under the wrong key, garbage, an unsigned one.
	f.add("orphan-user", "gone")
	gone := f.add("nar-gone")
	if err := f.st.Delete(ctx, gone, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	flipped := f.add("flipped")
	data := readKey(t, f.st, flipped)
	data[len(data)/2] ^= 0xff
	f.put(flipped, data)
	short1 := f.add("short")
	f.put(short1, readKey(t, f.st, short1)[:5])
	f.put(nixcache.NarInfoKey(hashOf("elsewhere")), readKey(t, f.st, nixcache.NarInfoKey(hashOf("lib"))))
	f.put(nixcache.NarInfoKey(hashOf("junk")), []byte("not a narinfo\n"))
	f.add("unsigned")
	body := string(readKey(t, f.st, nixcache.NarInfoKey(hashOf("unsigned"))))
	f.put(nixcache.NarInfoKey(hashOf("unsigned")), []byte(body[:strings.Index(body, "Sig:")]))

	shallow, err := verify.Check(ctx, f.st, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("dangling-reference:%s invalid-narinfo:%s missing-nar:%s nar-size:%s wrong-key:%s",
		short("orphan-user"), short("junk"), short("nar-gone"), short("short"), short("elsewhere"))
	if got := kinds(shallow); got != want {
		t.Errorf("shallow problems\n got %s\nwant %s", got, want)
	}
	deep, err := verify.Check(ctx, f.st, verify.Options{Deep: true, TrustedKeys: []string{f.pub}})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"file-hash:" + short("flipped"), "nar-hash:" + short("flipped"), "nar-hash:" + short("short"), "signature:" + short("unsigned")} {
		if !strings.Contains(kinds(deep), w) {
			t.Errorf("deep problems %s lack %s", kinds(deep), w)
		}
	}
	if deep.Counts[verify.MissingNAR] != 1 || strings.Contains(kinds(deep), "signature:"+short("lib")) {
		t.Errorf("deep counts %v / %s", deep.Counts, kinds(deep))
	}
	if _, err := verify.Check(ctx, f.st, verify.Options{Deep: true, TrustedKeys: []string{"nonsense"}}); err == nil {
		t.Error("a malformed trusted key was accepted")
	}
}

func readKey(t *testing.T, st storage.Store, key string) []byte {
	t.Helper()
	r, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestQuarantine: --quarantine moves exactly the narinfo whose NAR is
// missing, the next check is clean, the report is saved, and Restore puts
// it back byte for byte.
func TestQuarantine(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	f.add("lib")
	gone := f.add("broken", "lib")
	nar := readKey(t, f.st, gone)
	if err := f.st.Delete(ctx, gone, storage.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	key := nixcache.NarInfoKey(hashOf("broken"))
	orig := readKey(t, f.st, key)
	rep, err := verify.Run(ctx, f.st, verify.RunOptions{Quarantine: true, Save: true, Lock: verify.LockOptions{Wait: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Quarantined) != 1 || rep.Quarantined[0] != key || rep.InQuarantine != 1 {
		t.Fatalf("quarantined %v (in quarantine %d), want [%s]", rep.Quarantined, rep.InQuarantine, key)
	}
	if _, err := f.st.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("%s still present: %v", key, err)
	}
	again, err := verify.Check(ctx, f.st, verify.Options{})
	if err != nil || !again.OK() || again.InQuarantine != 1 {
		t.Fatalf("after quarantine: %v %s, in quarantine %d", err, kinds(again), again.InQuarantine)
	}
	n := 0
	for o, err := range f.st.List(ctx, nixcache.VerifyReportsPrefix) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := nixcache.ReportTime(nixcache.VerifyReportsPrefix, o.Key); ok {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d verify reports saved, want 1", n)
	}
	// While its NAR is still missing, the narinfo stays in quarantine:
	// putting it back would only bring back the broken path.
	restored, kept, err := verify.Restore(ctx, f.st, nil, verify.LockOptions{Wait: time.Second})
	if err != nil || len(restored) != 0 || len(kept) != 1 || !strings.Contains(kept[0].Reason, "NAR") {
		t.Fatalf("restore with the NAR missing: %v %+v %v, want it kept for its NAR", restored, kept, err)
	}
	if _, err := f.st.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("restore with the NAR missing put %s back: %v", key, err)
	}
	if _, err := f.st.Put(ctx, gone, bytes.NewReader(nar), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	restored, kept, err = verify.Restore(ctx, f.st, nil, verify.LockOptions{Wait: time.Second})
	if err != nil || len(restored) != 1 || len(kept) != 0 {
		t.Fatalf("restore: %v %v %v", restored, kept, err)
	}
	if got := readKey(t, f.st, key); !bytes.Equal(got, orig) {
		t.Error("restored narinfo differs from the original")
	}
}
