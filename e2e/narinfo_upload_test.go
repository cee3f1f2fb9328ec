package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kiss-cache/kiss/internal/testenv"
	"github.com/kiss-cache/kiss/nixcache"
)

// The gateway accepts a narinfo only if the real Nix reads it as kiss does
// (nixcache.ParseNarInfoUpload): each body is put in a file:// cache and
// read back with `nix path-info --json`. Accepted must mean Nix reads it
// with the URL, NarSize and references the pruner reads (ParseNarInfo);
// refused must mean Nix rejects it or reads something else (the pruner
// would keep one NAR and clients fetch another).
func TestNarInfoUploadAgreesWithNix(t *testing.T) {
	n := testenv.Nix(t)
	const h = "sbldylj3clbkc0aqvjjzfa6slp4zdvlj"
	const r = "0c6n4ix1bb6c8aal1jz7x2mrhyjbnz29"
	const nh = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"
	line := func(k, v string) string { return k + ": " + v + "\n" }
	head := line("StorePath", "/nix/store/"+h+"-x") + line("URL", "nar/a.nar") + line("Compression", "none")
	good := head + line("NarHash", nh) + line("NarSize", "120") + line("References", r+"-dep "+h+"-x")
	cases := map[string]string{
		"written by Nix":           good,
		"no references":            head + line("NarHash", nh) + line("NarSize", "120") + "References: \n",
		"SRI NarHash":              head + line("NarHash", "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=") + line("NarSize", "120"),
		"an unknown key":           good + line("Future", "field"),
		"a deriver":                good + line("Deriver", r+"-x.drv"),
		"no NarHash":               head + line("NarSize", "120"),
		"a NarHash that is not":    head + line("NarHash", "sha256:xyz") + line("NarSize", "120"),
		"NarSize 0":                head + line("NarHash", nh) + line("NarSize", "0"),
		"no NarSize":               head + line("NarHash", nh),
		"CRLF":                     strings.ReplaceAll(good, "\n", "\r\n"),
		"no final newline":         strings.TrimSuffix(good, "\n"),
		"an empty line":            line("StorePath", "/nix/store/"+h+"-x") + "\n" + strings.TrimPrefix(good, line("StorePath", "/nix/store/"+h+"-x")),
		"Key:value":                strings.Replace(good, "URL: ", "URL:", 1),
		"a trailing space":         strings.Replace(good, "nar/a.nar", "nar/a.nar ", 1),
		"two spaces after the key": strings.Replace(good, "StorePath: ", "StorePath:  ", 1),
	}
	type info struct {
		URL        string   `json:"url"`
		NarSize    uint64   `json:"narSize"`
		References []string `json:"references"`
	}
	var accepted, refused int
	for name, body := range cases {
		dir := t.TempDir()
		for k, v := range map[string]string{"nix-cache-info": "StoreDir: /nix/store\n", h + ".narinfo": body} {
			if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		_, _, kerr := nixcache.ParseNarInfoUpload([]byte(body), "")
		// What the pruner reads (the lenient parse) against what Nix reads.
		pruner, perr := nixcache.ParseNarInfo([]byte(body), "")
		out, nerr := n.Run("nix", "path-info", "--json", "--store", "file://"+dir, "/nix/store/"+h+"-x")
		var got []info
		same := perr == nil && nerr == nil && json.Unmarshal([]byte(out), &got) == nil && len(got) == 1
		if same {
			var refs []string
			for _, r := range pruner.References {
				refs = append(refs, r.String())
			}
			var nixRefs []string
			for _, p := range got[0].References {
				nixRefs = append(nixRefs, strings.TrimPrefix(p, "/nix/store/")[:nixcache.HashLen])
			}
			slices.Sort(refs)
			slices.Sort(nixRefs)
			same = got[0].URL == pruner.URL && got[0].NarSize == pruner.NarSize && slices.Equal(refs, nixRefs)
		}
		switch {
		case kerr == nil && !same:
			t.Errorf("%s: the gateway accepts it; the pruner reads %+v (%v), Nix %+v (%v)", name, pruner, perr, got, nerr)
		case kerr != nil && same:
			t.Errorf("%s: the gateway refuses it (%v), but Nix reads it as the pruner does: %+v", name, kerr, got)
		case kerr == nil:
			accepted++
		default:
			refused++
		}
	}
	if accepted != 5 || refused != len(cases)-5 {
		t.Errorf("accepted %d, refused %d; want 5 and %d", accepted, refused, len(cases)-5)
	}
}
