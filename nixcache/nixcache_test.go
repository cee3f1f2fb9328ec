package nixcache_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/storepath"

	"github.com/kiss-cache/kiss/nixcache"
)

// Real Nix 2.8 output (reference/environment.md), plus a key Nix 2.8 does not
// write (go-nix's parser rejects it; ours must not).
const fixture = `StorePath: /nix/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b
URL: nar/1kmbzm1dw4jca8fwjdi3dz7pq34pz99f5paydq6cry42lwg8n2bj.nar.zst
Compression: zstd
FileHash: sha256:1kmbzm1dw4jca8fwjdi3dz7pq34pz99f5paydq6cry42lwg8n2bj
FileSize: 213
NarHash: sha256:0gxb81r7gprh2asvkw2ah5g9vmk4jhyz93lfx89wyr2srqay8m3b
NarSize: 576
References: dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a 2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b
Deriver: 4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv
`

func TestParseNarInfoMatchesGoNix(t *testing.T) {
	ni, err := nixcache.ParseNarInfo([]byte(fixture), "")
	if err != nil {
		t.Fatal(err)
	}
	ref, err := narinfo.Parse(strings.NewReader(fixture))
	if err != nil {
		t.Fatal(err)
	}
	if ni.StorePath != ref.StorePath || ni.URL != ref.URL || ni.FileSize != ref.FileSize || ni.NarSize != ref.NarSize || ni.Compression != ref.Compression {
		t.Fatalf("ours %+v, go-nix %+v", ni, ref)
	}
	if len(ni.References) != len(ref.References) {
		t.Fatalf("refs: %d vs %d", len(ni.References), len(ref.References))
	}
	for i, r := range ref.References {
		sp, err := storepath.FromString(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sp.Digest, ni.References[i][:]) {
			t.Errorf("ref %d: %s vs %s", i, ni.References[i], r)
		}
	}
	if !ni.HasDeriver || ni.Deriver.String() != "4cfd372bq5xxc1qxqzbpa2n1flhkr898" || ni.DeriverName != ref.Deriver {
		t.Errorf("deriver %v %s", ni.HasDeriver, ni.Deriver)
	}
	if k, ok := ni.NarKey(); !ok || k != ref.URL {
		t.Errorf("nar key %q %v", k, ok)
	}
	if ni.Hash.String() != "2180hhkf15y0d94rpm7qjmr08n19qhmn" {
		t.Errorf("hash %s", ni.Hash)
	}
}

func TestParseNarInfoToleratesUnknownKeys(t *testing.T) {
	in := fixture + "FutureKey: something: with colons\nSig: k:abc\nCA: fixed:r:sha256:xyz\n"
	if _, err := narinfo.Parse(strings.NewReader(in)); err == nil {
		t.Log("go-nix accepted it too")
	}
	ni, err := nixcache.ParseNarInfo([]byte(in), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ni.References) != 2 {
		t.Fatal(ni.References)
	}
}

func TestParseNarInfoRejects(t *testing.T) {
	base := strings.Split(fixture, "\n")
	repl := func(prefix, with string) string {
		var out []string
		for _, l := range base {
			if strings.HasPrefix(l, prefix) {
				if with == "" {
					continue
				}
				l = with
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	cases := map[string]string{
		"no store path":  repl("StorePath:", ""),
		"bad store path": repl("StorePath:", "StorePath: /nix/store/short-x"),
		"sub path":       repl("StorePath:", "StorePath: /nix/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b/bin"),
		"other store":    repl("StorePath:", "StorePath: /gnu/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b"),
		"no url":         repl("URL:", ""),
		"bare hash ref":  repl("References:", "References: dsdpfp4hyv22f4dqg1d0spdsv1fq33xx"),
		"bad ref alpha":  repl("References:", "References: eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x"),
		"bad deriver":    repl("Deriver:", "Deriver: nonsense"),
		"bad file size":  repl("FileSize:", "FileSize: -1"),
		"garbage line":   fixture + "no colon here\n",
		"twice refs":     fixture + "References: \n",
		"binary":         "\x00\x01\x02",
	}
	for name, in := range cases {
		if _, err := nixcache.ParseNarInfo([]byte(in), ""); !errors.Is(err, nixcache.ErrInvalidNarInfo) {
			t.Errorf("%s: err = %v, want ErrInvalidNarInfo", name, err)
		}
	}
	if _, err := nixcache.ParseNarInfo([]byte(repl("Deriver:", "Deriver: unknown-deriver")), ""); err != nil {
		t.Errorf("unknown-deriver: %v", err)
	}
	if ni, err := nixcache.ParseNarInfo([]byte(repl("References:", "References: ")), ""); err != nil || len(ni.References) != 0 {
		t.Errorf("empty references: %v %v", ni, err)
	}
}

// TestReferenceKeyMapping: the one key function maps every spelling of a
// store path to the same narinfo key (the niks3 bare-hash bug class).
func TestReferenceKeyMapping(t *testing.T) {
	want := "dsdpfp4hyv22f4dqg1d0spdsv1fq33xx.narinfo"
	for _, ref := range []string{
		"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a",
		"/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a",
		"/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a/bin/x",
		"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx",
	} {
		got, err := nixcache.NarInfoKeyFor(ref, "")
		if err != nil || got != want {
			t.Errorf("%q -> %q, %v; want %q", ref, got, err, want)
		}
		if k, h := nixcache.Classify(got); k != nixcache.KindNarInfo || nixcache.NarInfoKey(h) != want {
			t.Errorf("Classify(%q) = %v %s", got, k, h)
		}
	}
	for _, bad := range []string{"", "x", "/nix/store", "/nix/storex/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x", "dsdpfp4hyv22f4dqg1d0spdsv1fq33xx.narinfo"} {
		if k, err := nixcache.NarInfoKeyFor(bad, ""); err == nil {
			t.Errorf("%q -> %q, want error", bad, k)
		}
	}
	if k, err := nixcache.NarInfoKeyFor("/gnu/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-a", "/gnu/store"); err != nil || k != want {
		t.Errorf("other store dir: %q %v", k, err)
	}
}

func TestClassify(t *testing.T) {
	cases := map[string]nixcache.Kind{
		"nix-cache-info":      nixcache.KindCacheInfo,
		"gcroots/web1":        nixcache.KindRoot,
		"gcroots/.lock/prune": nixcache.KindLease, // was KindRoot: leases have their own rules now
		"gcroots/team/.x":     nixcache.KindOther, // never read as a marker
		".kiss/check/run/raw": nixcache.KindProbe,
		"gcroots/x.tmp":       nixcache.KindRoot,
		".kiss/memo/v1":       nixcache.KindKiss,
		".kiss/tmp/abc":       nixcache.KindTemp,
		".tmp/0000001":        nixcache.KindTemp,
		"nar/x.nar.tmp":       nixcache.KindTemp,
		"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx.narinfo":     nixcache.KindNarInfo,
		"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx.ls":          nixcache.KindListing,
		"eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee.narinfo":     nixcache.KindOther,
		"sub/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx.narinfo": nixcache.KindOther,
		"nar/abc.nar.xz": nixcache.KindNAR,
		"log/4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv": nixcache.KindLog,
		"log/a/b":                         nixcache.KindOther,
		"realisations/sha256:abc!out.doi": nixcache.KindRealisation,
		"build-trace-v2/4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv/out.doi": nixcache.KindBuildTrace,
		"debuginfo/0123abcd": nixcache.KindDebugInfo,
		"index.html":         nixcache.KindOther,
		// Strict shapes (the gateway's, now the only ones): what Nix never
		// writes is KindOther, which the pruner never deletes.
		"nar/sub/x.nar": nixcache.KindOther,
		"nar/README":    nixcache.KindOther,
		"nar/.x.nar":    nixcache.KindOther,
		"log/.hidden":   nixcache.KindOther,
		"log/foo":       nixcache.KindOther, // not a derivation: nothing could ever prune it
		"log/eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x.drv": nixcache.KindOther,
		"realisations/x.json":                        nixcache.KindOther,
		"build-trace-v2/a/.b.doi":                    nixcache.KindOther,
		"debuginfo/a/b":                              nixcache.KindOther,
		"gcroots/.lock/a/b":                          nixcache.KindOther,
		"gcroots/ci/main/42":                         nixcache.KindRoot,
		".kiss/check/run":                            nixcache.KindKiss,
		"x.tmp":                                      nixcache.KindTemp,
	}
	for key, want := range cases {
		if got, _ := nixcache.Classify(key); got != want {
			t.Errorf("Classify(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestNarKeyFromURL(t *testing.T) {
	// What clients fetch (what the pruner keeps): a path from the cache
	// root, a leading "/" and ".." above the root staying in the cache.
	ok := map[string]string{
		"nar/a.nar.xz": "nar/a.nar.xz", "./nar/a.nar": "nar/a.nar", "nar//b": "nar/b", "x/../nar/c": "nar/c",
		"/nar/a": "nar/a", "//nar/a": "nar/a", "../nar/a": "nar/a", "/../../nar/a": "nar/a",
	}
	for in, want := range ok {
		if got, good := nixcache.NarKeyFromURL(in); !good || got != want {
			t.Errorf("NarKeyFromURL(%q) = %q %v, want %q", in, got, good, want)
		}
	}
	for _, in := range []string{"", "https://cache.nixos.org/nar/a", "file:///srv/cache/nar/a", "/", "..", ".", "../.."} {
		if got, good := nixcache.NarKeyFromURL(in); good {
			t.Errorf("NarKeyFromURL(%q) = %q, want not in cache", in, got)
		}
	}
	// What a writer may store: relative and within the cache for every
	// client; each such URL maps to the same key for the pruner.
	for _, in := range []string{"nar/a.nar.xz", "./nar/a.nar", "nar//b", "x/../nar/c"} {
		got, good := nixcache.NarKeyFromPlainURL(in)
		if !good || got != ok[in] {
			t.Errorf("NarKeyFromPlainURL(%q) = %q %v, want %q", in, got, good, ok[in])
		}
	}
	for _, in := range []string{"", "https://cache.nixos.org/nar/a", "/nar/a", "//nar/a", "../nar/a", "..", "."} {
		if got, good := nixcache.NarKeyFromPlainURL(in); good {
			t.Errorf("NarKeyFromPlainURL(%q) = %q, want refused", in, got)
		}
	}
}

// FuzzNarKeyFromPlainURL: every URL a writer may store is kept by the
// pruner under the same key.
func FuzzNarKeyFromPlainURL(f *testing.F) {
	for _, s := range []string{"nar/a.nar.xz", "./nar/a", "x/../nar/c", "/nar/a", "../nar/a", "a//b/./c/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		plain, ok := nixcache.NarKeyFromPlainURL(u)
		if !ok {
			return
		}
		if got, good := nixcache.NarKeyFromURL(u); !good || got != plain {
			t.Fatalf("%q: plain %q, kept %q %v", u, plain, got, good)
		}
	})
}

func TestParseMarker(t *testing.T) {
	in := "/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a\n  /nix/store/2180hhkf15y0d94rpm7qjmr08n19qhmn-feas-b/bin/x  \r\n# comment\nshared\n/nix/store\n\n"
	roots, ignored, err := nixcache.ParseMarker([]byte(in), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(roots) != 2 || roots[0].String() != "dsdpfp4hyv22f4dqg1d0spdsv1fq33xx" || roots[1].String() != "2180hhkf15y0d94rpm7qjmr08n19qhmn" || ignored != 2 {
		t.Fatalf("roots %v ignored %d", roots, ignored)
	}
}

func TestRealisationAndDebugInfo(t *testing.T) {
	for _, doc := range []string{
		`{"id":"sha256:abc!out","outPath":"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a","signatures":[],"dependentRealisations":{}}`,
		`{"outPath":"/nix/store/dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a","signatures":[]}`,
		`{"key":{"drvPath":"4cfd372bq5xxc1qxqzbpa2n1flhkr898-feas-b.drv","outputName":"out"},"value":{"outPath":"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx-feas-a"}}`,
	} {
		h, err := nixcache.RealisationOutPath([]byte(doc), "")
		if err != nil || h.String() != "dsdpfp4hyv22f4dqg1d0spdsv1fq33xx" {
			t.Errorf("%s: %s %v", doc, h, err)
		}
	}
	for _, bad := range []string{``, `{}`, `{"outPath":"dsdpfp4hyv22f4dqg1d0spdsv1fq33xx"}`, `{"outPath":3}`, `[`} {
		if _, err := nixcache.RealisationOutPath([]byte(bad), ""); !errors.Is(err, nixcache.ErrInvalidMeta) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	k, err := nixcache.DebugInfoNarKey("debuginfo/0123", []byte(`{"archive":"../nar/abc.nar.xz","member":"lib/debug/.build-id/01/23.debug"}`))
	if err != nil || k != "nar/abc.nar.xz" {
		t.Errorf("debuginfo: %q %v", k, err)
	}
	for _, bad := range []string{`{"archive":"../../etc/passwd"}`, `{"archive":"https://x/nar/a"}`, `{}`, `nope`} {
		if k, err := nixcache.DebugInfoNarKey("debuginfo/0123", []byte(bad)); err == nil {
			t.Errorf("%s -> %q", bad, k)
		}
	}
}

func TestParseCacheInfo(t *testing.T) {
	if d := nixcache.ParseCacheInfo([]byte("StoreDir: /gnu/store\nWantMassQuery: 1\n")); d != "/gnu/store" {
		t.Fatal(d)
	}
	if d := nixcache.ParseCacheInfo([]byte("WantMassQuery: 1\n")); d != "" {
		t.Fatal(d)
	}
}

// TestRules: the rules every part of kiss reads from the classification.
func TestRules(t *testing.T) {
	prunable := map[nixcache.Kind]bool{nixcache.KindNarInfo: true, nixcache.KindListing: true, nixcache.KindNAR: true, nixcache.KindLog: true,
		nixcache.KindRealisation: true, nixcache.KindBuildTrace: true, nixcache.KindDebugInfo: true, nixcache.KindTemp: true}
	for k := nixcache.Kind(0); k < nixcache.NumKinds; k++ {
		r := k.Rules()
		if r.Prunable != prunable[k] {
			t.Errorf("%v: prunable %v", k, r.Prunable)
		}
		if r.Upstream && (!r.Prunable || r.Read != nixcache.Readers) {
			t.Errorf("%v: fillable from upstream but not readable cache content", k)
		}
		if r.Delete && r.Prunable {
			t.Errorf("%v: cache content deletable over HTTP", k)
		}
		if (r.Read == nixcache.Nobody) != (r.Write == nixcache.Nobody) {
			t.Errorf("%v: read %v, write %v", k, r.Read, r.Write)
		}
		if r.ContentType == "" || r.CacheControl == "" || k.String() == "unknown" {
			t.Errorf("%v: %+v", k, r)
		}
		// Only a NAR is named by its own bytes; every other key a prune
		// deletes and a writer may put again with other bytes.
		if strings.Contains(r.CacheControl, "immutable") != (k == nixcache.KindNAR) {
			t.Errorf("%v: Cache-Control %q (immutable is for NARs only)", k, r.CacheControl)
		}
	}
	for kind, want := range map[nixcache.Kind]string{nixcache.KindNarInfo: "text/x-nix-narinfo", nixcache.KindNAR: "application/x-nix-nar", nixcache.KindCacheInfo: "text/x-nix-cache-info"} {
		if got := kind.Rules().ContentType; got != want {
			t.Errorf("%v: content type %q, want %q", kind, got, want)
		}
	}
	if nixcache.KindLease.Rules().Read != nixcache.Writers || nixcache.KindRoot.Rules().Read != nixcache.Readers {
		t.Error("leases are for writers only; markers are readable")
	}
	if nixcache.KindRoot.Rules().MaxBody != nixcache.MaxMarkerSize {
		t.Error("one marker limit")
	}
}

func TestMarkerNames(t *testing.T) {
	for name, want := range map[string]string{"web1": "gcroots/web1", "gcroots/ci/main": "gcroots/ci/main", "a.b/c-d": "gcroots/a.b/c-d"} {
		if got, err := nixcache.MarkerKey(name); err != nil || got != want || !nixcache.IsMarkerKey(got) {
			t.Errorf("MarkerKey(%q) = %q, %v", name, got, err)
		}
	}
	for _, name := range []string{"", "gcroots/", ".x", "team/.x", ".lock/prune", "a//b", "a/"} {
		if got, err := nixcache.MarkerKey(name); !errors.Is(err, nixcache.ErrInvalidMarkerName) {
			t.Errorf("MarkerKey(%q) = %q, %v", name, got, err)
		}
		if k, _ := nixcache.Classify("gcroots/" + name); k == nixcache.KindRoot {
			t.Errorf("Classify(gcroots/%s) = a marker, which no writer may write", name)
		}
	}
}

func TestValidateCacheInfo(t *testing.T) {
	for _, c := range []struct {
		body, storeDir string
		ok             bool
	}{
		{"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n", "", true},
		{"StoreDir: /nix/store\n", "/nix/store", true},
		{"WantMassQuery: 1\n", "", true},
		{"", "", true},
		{"StoreDir: /gnu/store\n", "/gnu/store", true},
		{"StoreDir: /gnu/store\n", "", false},
		{"WantMassQuery: 1\n", "/gnu/store", false},
		{"StoreDir: /nix/store/\n", "", false},
		{"StoreDir: /nix/store\nStoreDir: /evil\n", "", false},
		{"StoreDir: \n", "", false},
		{"StoreDir: /nix/store\n\xff\n", "", false},
	} {
		err := nixcache.ValidateCacheInfo([]byte(c.body), c.storeDir)
		if (err == nil) != c.ok {
			t.Errorf("ValidateCacheInfo(%q, %q) = %v, want ok %v", c.body, c.storeDir, err, c.ok)
		}
		if err != nil && !errors.Is(err, nixcache.ErrInvalidCacheInfo) {
			t.Errorf("ValidateCacheInfo(%q): %v is not ErrInvalidCacheInfo", c.body, err)
		}
	}
}

func TestParseNarInfoUpload(t *testing.T) {
	const good = "StorePath: /nix/store/sbldylj3clbkc0aqvjjzfa6slp4zdvlj-x\nURL: nar/a.nar\nCompression: none\n" +
		"NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\nNarSize: 120\nReferences: \n"
	if _, _, err := nixcache.ParseNarInfoUpload([]byte(good), ""); err != nil {
		t.Fatalf("a narinfo as Nix writes it: %v", err)
	}
	for name, body := range map[string]string{
		"no NarHash":       strings.Replace(good, "NarHash: sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s\n", "", 1),
		"bad NarHash":      strings.Replace(good, "sha256:1b8m", "sha256:!b8m", 1),
		"bad FileHash":     good + "FileHash: md5:zz\n",
		"NarSize 0":        strings.Replace(good, "NarSize: 120", "NarSize: 0", 1),
		"CRLF":             strings.ReplaceAll(good, "\n", "\r\n"),
		"no final newline": strings.TrimSuffix(good, "\n"),
		"empty line":       "\n" + good,
		"Key:value":        strings.Replace(good, "URL: ", "URL:", 1),
		"trailing space":   strings.Replace(good, "nar/a.nar", "nar/a.nar ", 1),
		"no StorePath":     good[strings.IndexByte(good, '\n')+1:],
	} {
		_, _, err := nixcache.ParseNarInfoUpload([]byte(body), "")
		if !errors.Is(err, nixcache.ErrInvalidNarInfo) {
			t.Errorf("%s: %v, want ErrInvalidNarInfo", name, err)
		}
	}
}
