package nixcache

import (
	"strconv"
	"strings"
	"time"
)

// Objects kiss's operator commands keep in the cache, under KissPrefix so the
// pruner never collects them (Classify: KindKiss) and Nix never sees them.
const (
	// QuarantinePrefix holds narinfos kiss verify --quarantine moved aside
	// (their NAR is missing): <hash>.narinfo, byte for byte. Such a narinfo
	// is not a narinfo to the pruner, to Nix or to the gateway: the path is
	// simply absent, so a client pushes it again. kiss verify --restore puts
	// it back.
	QuarantinePrefix = KissPrefix + "quarantine/"
	// ReportsPrefix holds run reports: <time>.json for each prune,
	// verify/<time>.json for each kiss verify.
	ReportsPrefix       = KissPrefix + "reports/"
	VerifyReportsPrefix = ReportsPrefix + "verify/"
)

// QuarantineKey is where kiss verify --quarantine moves the narinfo of h.
func QuarantineKey(h Hash) string { return QuarantinePrefix + NarInfoKey(h) }

// QuarantinedHash returns the hash a quarantine key holds the narinfo of.
func QuarantinedHash(key string) (Hash, bool) {
	rest, ok := strings.CutPrefix(key, QuarantinePrefix)
	if !ok {
		return Hash{}, false
	}
	k, h := Classify(rest)
	return h, k == KindNarInfo
}

// reportTimeLayout names reports so that key order is time order and no
// character needs escaping in a URL or a file name.
const reportTimeLayout = "2006-01-02T15-04-05.000Z"

// ReportKey is the key of a run report under prefix (ReportsPrefix or
// VerifyReportsPrefix) for a run at t (store clock).
func ReportKey(prefix string, t time.Time) string {
	return prefix + t.UTC().Format(reportTimeLayout) + ".json"
}

// ReportTime parses the time out of a report key; ok is false for any other
// key under the prefix (a subdirectory, a stray file).
func ReportTime(prefix, key string) (time.Time, bool) {
	name, ok := strings.CutPrefix(key, prefix)
	if !ok || strings.Contains(name, "/") {
		return time.Time{}, false
	}
	name, ok = strings.CutSuffix(name, ".json")
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(reportTimeLayout, name)
	return t, err == nil
}

// GenerationSep separates a marker's name from a generation number:
// gcroots/web1~3 is the third generation of gcroots/web1, a previous value
// kept by kiss roots add --keep / kiss with-lock --keep. A generation is a
// marker like any other (the pruner keeps what it names); its age is its
// current marker's (a generation of a live marker never expires by itself).
const GenerationSep = "~"

// GenerationKey is the key of generation n of the marker at key.
func GenerationKey(key string, n int) string {
	return key + GenerationSep + strconv.Itoa(n)
}

// ParseGenerationKey splits a generation's key into its marker's key and
// its number; ok is false for a key that is not a generation.
func ParseGenerationKey(key string) (marker string, n int, ok bool) {
	i := strings.LastIndex(key, GenerationSep)
	if i <= 0 || i == len(key)-1 || strings.HasSuffix(key[:i], "/") {
		return "", 0, false
	}
	digits := key[i+1:]
	if digits[0] == '0' {
		return "", 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return "", 0, false
		}
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		return "", 0, false
	}
	return key[:i], n, true
}
