package terraform_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// rolesExpr: app and garbage share lib; app will be rooted, garbage not.
const rolesExpr = `rec {
  lib = mk "roles-lib" "mkdir $out; echo lib-${nonce} > $out/lib.txt";
  app = mk "roles-app" "mkdir $out; echo ${lib} > $out/uses-lib";
  garbage = mk "roles-garbage" "mkdir $out; echo ${lib} garbage-${nonce} > $out/deps";
}`

// TestRolesOnMinIO enforces the role policies of the plan for real: the
// writer, reader and pruner documents that Terraform would create are given
// to MinIO (which evaluates AWS's policy language) as one identity per role,
// each role does its job through kiss itself — the writer pushes with
// `kiss with-lock … nix copy` and writes its markers, the reader serves the
// real Nix through `kiss serve`, the pruner prunes as the Lambda function
// under the Lambda Runtime Interface Emulator, with the plan's scheduled
// event — and every forbidden action is refused.
func TestRolesOnMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("MinIO, Nix, terraform and the Lambda emulator: not in -short")
	}
	complete := examplePlan(t, "examples/complete")
	docs := outputPolicies(t, complete)
	n := testenv.Nix(t)
	m := testenv.MinIO(t)
	m.CreateBucket(t, testBucket)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root := m.Client(m.Root())
	store := m.StoreURL(testBucket)
	marker := func(name string) string {
		return strings.Replace(store, "?", "/gcroots/"+name+"?", 1)
	}

	// What Terraform writes into the bucket besides the policies.
	info, _ := attrs(t, complete, "module.cache.aws_s3_object.nix_cache_info")
	if err := put(ctx, root, "nix-cache-info", info["content"].(string)); err != nil {
		t.Fatal(err)
	}
	ids := map[string]testenv.Identity{}
	for _, role := range []string{"writer", "reader", "pruner"} {
		id, err := m.AssumeRole(ctx, role, docs[role])
		if err != nil {
			t.Fatalf("MinIO refused the %s policy of the plan: %v\n%s", role, err, docs[role])
		}
		ids[role] = id
	}
	kiss := func(role string, args ...string) testenv.KissResult {
		t.Helper()
		return testenv.RunKiss(t, append(append([]string{}, n.Env...), ids[role].Env()...), args...)
	}

	out := n.BuildAttrs(rolesExpr)
	sk, pk := n.GenerateKey("kiss-roles-" + n.Nonce[:6])
	push := func(role, name, path string) testenv.KissResult {
		t.Helper()
		res := kiss(role, "with-lock", marker(name), path, "--lock-wait", "30s", "--",
			"sh", "-c", `nix copy --to "$KISS_STORE?secret-key=$1" "$2"`, "sh", sk, path)
		// nix-cache-info is Terraform's: the ephemeral gateway must not
		// try to write it with every narinfo (one refused PUT each).
		if n := strings.Count(res.Stderr, "store nix-cache-info"); n > 1 {
			t.Errorf("%s push: the gateway tried to write nix-cache-info %d times", role, n)
		}
		return res
	}

	// The writer pushes app (rooted by gcroots/app) and garbage, whose
	// marker it then removes: both through its own policy only.
	if res := push("writer", "app", out["app"]); res.ExitCode != 0 {
		t.Fatalf("writer: kiss with-lock … nix copy exited %d", res.ExitCode)
	}
	if got := get(ctx, t, root, "gcroots/app"); got != out["app"]+"\n" {
		t.Fatalf("marker gcroots/app = %q", got)
	}
	if res := push("writer", "tmp", out["garbage"]); res.ExitCode != 0 {
		t.Fatalf("writer: push of garbage exited %d", res.ExitCode)
	}
	if res := kiss("writer", "roots", "rm", store, "tmp"); res.ExitCode != 0 {
		t.Fatalf("writer: kiss roots rm exited %d", res.ExitCode)
	}
	appKeys, garbageKeys := cacheKeys(ctx, t, root, out["app"], out["lib"]), cacheKeys(ctx, t, root, out["garbage"])
	requirePresent(ctx, t, root, append(appKeys, garbageKeys...)...)
	requireAbsentPrefix(ctx, t, root, "gcroots/.lock/")

	// The reader serves the cache to the real Nix (2.8 has no S3).
	serve := startServe(t, append(append([]string{}, n.Env...), ids["reader"].Env()...), store, "--open-reads", "--read-only")
	if err := n.SubstituteFrom(serve, n.NewStore(), pk, out["app"]); err != nil {
		t.Fatalf("reader: nix copy --from kiss serve: %v", err)
	}

	t.Run("forbidden", func(t *testing.T) {
		forbidden(ctx, t, m, ids, appKeys, garbageKeys)
	})

	// Through kiss too: a writer cannot prune, a reader cannot push.
	if res := kiss("writer", "prune", "--grace", "0s", "--lock-wait", "5s", store); res.ExitCode != 3 || !strings.Contains(res.Stderr, "denied") {
		t.Errorf("writer: kiss prune exited %d, want 3 (access denied)", res.ExitCode)
	}
	if res := push("reader", "app2", out["app"]); res.ExitCode != 3 || !strings.Contains(res.Stderr, "denied") {
		t.Errorf("reader: kiss with-lock exited %d, want 3 (access denied)", res.ExitCode)
	}
	requirePresent(ctx, t, root, append(appKeys, garbageKeys...)...)

	t.Run("denied-read", func(t *testing.T) {
		deniedRead(ctx, t, m, docs["writer"], func(id testenv.Identity) testenv.KissResult {
			return testenv.RunKiss(t, append(append([]string{}, n.Env...), id.Env()...), "with-lock", marker("denied"), out["app"], "--lock-wait", "5s", "--", "false")
		})
	})

	t.Run("bucket-policy", func(t *testing.T) {
		bucketPolicy(ctx, t, m, examplePlan(t, "examples/basic"), appKeys)
	})

	// The pruner: the Lambda function under the emulator, with the pruner
	// identity as its role and the event the schedule sends.
	ev := scheduledEvent(t, complete)
	ev["store"] = store
	ev["grace"] = "0s" // everything here is seconds old
	ev["lock_wait"] = "30s"
	event, _ := json.Marshal(ev)
	rie := testenv.LambdaRIE(t, testenv.KissLambdaBinary(t), ids["pruner"].Env(), 120)
	time.Sleep(2500 * time.Millisecond) // the store's clock (whole seconds) past the last write
	var reports []map[string]any
	for run := 0; run < 2; run++ {
		body, failed, err := rie.Invoke(ctx, event)
		if err != nil || failed {
			t.Fatalf("pruner: invocation %d: failed %v, %v\n%s", run, failed, err, body)
		}
		var rep map[string]any
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("pruner: report: %v\n%s", err, body)
		}
		t.Logf("pruner: Lambda run %d under the emulator: deleted %v, narinfo reads %v, memo %v", run, rep["deleted"], rep["narinfo_reads"], rep["memo"])
		reports = append(reports, rep)
	}
	requireAbsent(ctx, t, root, garbageKeys...)
	requirePresent(ctx, t, root, appKeys...)
	requirePresent(ctx, t, root, "gcroots/app", "nix-cache-info")
	requireAbsentPrefix(ctx, t, root, "gcroots/.lock/")
	if d := at(reports[0], "deleted", "objects"); d != float64(len(garbageKeys)) {
		t.Errorf("first run deleted %v objects, want the %d of garbage", d, len(garbageKeys))
	}
	if d := at(reports[1], "deleted", "objects"); d != 0.0 || at(reports[1], "memo", "loaded") != true {
		t.Errorf("second run: deleted %v, memo %v: want nothing left to delete, from the memo the first run wrote", d, at(reports[1], "memo"))
	}
	// The reader still substitutes everything rooted.
	if err := n.SubstituteFrom(serve, n.NewStore(), pk, out["app"]); err != nil {
		t.Errorf("reader after the prune: %v", err)
	}
}

// forbidden: what each role must not do is refused by MinIO; what it must
// do (checked alongside, so a broken identity cannot pass) is allowed.
func forbidden(ctx context.Context, t *testing.T, m *testenv.MinIOServer, ids map[string]testenv.Identity, appKeys, garbageKeys []string) {
	narinfo, nar := appKeys[0], ""
	for _, k := range appKeys {
		if strings.HasPrefix(k, "nar/") {
			nar = k
		}
	}
	lease := "gcroots/.lock/kisstest." + strings.Repeat("0", 16)
	cases := []struct {
		role, what string
		allowed    bool
		do         func(c *s3.Client) error
	}{
		{"reader", "read a narinfo", true, func(c *s3.Client) error { return getErr(ctx, c, narinfo) }},
		{"reader", "PUT a narinfo", false, func(c *s3.Client) error { return put(ctx, c, "0000000000000000000000000000000r.narinfo", "x") }},
		{"reader", "PUT a NAR", false, func(c *s3.Client) error { return put(ctx, c, "nar/reader.nar", "x") }},
		{"reader", "write a marker", false, func(c *s3.Client) error { return put(ctx, c, "gcroots/reader", "x") }},
		{"reader", "take a writer lease", false, func(c *s3.Client) error { return put(ctx, c, lease, "{}", ifNoneMatch) }},
		{"reader", "delete a NAR", false, func(c *s3.Client) error { return del(ctx, c, nar) }},

		{"writer", "take a writer lease", true, func(c *s3.Client) error { return put(ctx, c, lease, "{}", ifNoneMatch) }},
		{"writer", "delete a cache narinfo", false, func(c *s3.Client) error { return del(ctx, c, narinfo) }},
		{"writer", "delete a NAR", false, func(c *s3.Client) error { return del(ctx, c, nar) }},
		{"writer", "batch-delete cache objects", false, func(c *s3.Client) error { return delMany(ctx, c, garbageKeys) }},
		{"writer", "write the closure memo (.kiss/)", false, func(c *s3.Client) error { return put(ctx, c, ".kiss/memo/v2", "x") }},
		{"writer", "write .kiss/x.narinfo", false, func(c *s3.Client) error { return put(ctx, c, ".kiss/x.narinfo", "x") }},
		{"writer", "overwrite nix-cache-info", false, func(c *s3.Client) error { return put(ctx, c, "nix-cache-info", "StoreDir: /evil\n") }},
		{"writer", "delete nix-cache-info", false, func(c *s3.Client) error { return del(ctx, c, "nix-cache-info") }},
		{"writer", "take the prune lease", false, func(c *s3.Client) error { return put(ctx, c, "gcroots/.lock/prune", "{}", ifNoneMatch) }},
		{"writer", "delete the prune lease", false, func(c *s3.Client) error { return del(ctx, c, "gcroots/.lock/prune") }},
		{"writer", "write outside the cache layout", false, func(c *s3.Client) error { return put(ctx, c, "index.html", "x") }},
		// Not enforced by MinIO: it knows neither the s3:if-none-match nor
		// the s3:if-match condition key (bucketPolicy shows it refusing the
		// statement), and it applies bucket policies to anonymous requests
		// only. On AWS the bucket policy's DenyUnconditionalLeaseWrites
		// refuses this PUT.
		{"writer", "overwrite a lease without a condition (allowed on MinIO, denied on AWS)", true, func(c *s3.Client) error { return put(ctx, c, lease, "{}") }},
		{"writer", "release its lease", true, func(c *s3.Client) error { return del(ctx, c, lease) }},

		{"pruner", "write a kiss storage check probe", true, func(c *s3.Client) error { return put(ctx, c, ".kiss/check/kisstest", "x") }},
		{"pruner", "remove the probe", true, func(c *s3.Client) error { return del(ctx, c, ".kiss/check/kisstest") }},
		{"pruner", "PUT a narinfo", false, func(c *s3.Client) error { return put(ctx, c, "0000000000000000000000000000000p.narinfo", "x") }},
		{"pruner", "PUT a NAR", false, func(c *s3.Client) error { return put(ctx, c, "nar/pruner.nar", "x") }},
		{"pruner", "write a marker", false, func(c *s3.Client) error { return put(ctx, c, "gcroots/pruner", "x") }},
		{"pruner", "overwrite nix-cache-info", false, func(c *s3.Client) error { return put(ctx, c, "nix-cache-info", "StoreDir: /evil\n") }},
		{"pruner", "delete nix-cache-info", false, func(c *s3.Client) error { return del(ctx, c, "nix-cache-info") }},
	}
	refused := 0
	for _, c := range cases {
		err := c.do(m.Client(ids[c.role]))
		switch {
		case c.allowed && err != nil:
			t.Errorf("%s may %s, but: %v", c.role, c.what, err)
		case !c.allowed && !accessDenied(err):
			t.Errorf("%s must not %s: got %v, want AccessDenied", c.role, c.what, err)
		case !c.allowed:
			refused++
		}
	}
	t.Logf("MinIO refused %d forbidden actions of %d checked", refused, len(cases))
	requirePresent(ctx, t, m.Client(m.Root()), append(appKeys, garbageKeys...)...)
	if got := get(ctx, t, m.Client(m.Root()), "nix-cache-info"); strings.Contains(got, "evil") {
		t.Errorf("nix-cache-info overwritten: %q", got)
	}
}

// deniedRead: a writer that may not read the prune lease must not take
// the 403 for "no prune running". On AWS every missing key answers 403 to a
// caller without s3:ListBucket (hence the writer's unconditional grant,
// asserted on the plan); MinIO applies that rule to anonymous requests only
// (a signed HEAD of a missing key is a 404 there, with or without
// ListBucket), so the denial is made explicit here: with-lock must stop
// with kiss's explanation, write no marker, and run nothing.
func deniedRead(ctx context.Context, t *testing.T, m *testenv.MinIOServer, writerDoc string, withLock func(testenv.Identity) testenv.KissResult) {
	var doc map[string]any
	if err := json.Unmarshal([]byte(writerDoc), &doc); err != nil {
		t.Fatal(err)
	}
	doc["Statement"] = append(doc["Statement"].([]any), map[string]any{"Sid": "NoPruneLease", "Effect": "Deny", "Action": "s3:GetObject",
		"Resource": "arn:aws:s3:::" + testBucket + "/gcroots/.lock/prune"})
	b, _ := json.Marshal(doc)
	id, err := m.AssumeRole(ctx, "writer-denied", string(b))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Client(id).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String("gcroots/.lock/prune")})
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusForbidden {
		t.Fatalf("HEAD of the prune lease: %v, want 403", err)
	}
	res := withLock(id)
	if res.ExitCode != 3 || !strings.Contains(res.Stderr, "access denied") || !strings.Contains(res.Stderr, "s3:ListBucket") {
		t.Errorf("with-lock that may not read the prune lease: exit %d, want 3 and kiss's explanation of the 403", res.ExitCode)
	}
	requireAbsent(ctx, t, m.Client(m.Root()), "gcroots/denied")
	requireAbsentPrefix(ctx, t, m.Client(m.Root()), "gcroots/.lock/")
}

// bucketPolicy loads the plan's bucket policy (the public example's) into
// MinIO and checks what MinIO can evaluate of it: anonymous requests.
func bucketPolicy(ctx context.Context, t *testing.T, m *testenv.MinIOServer, basic *testenv.TerraformPlan, appKeys []string) {
	bp, _ := attrs(t, basic, "module.cache.aws_s3_bucket_policy.this")
	full := bp["policy"].(string)
	root := m.Client(m.Root())
	setPolicy := func(doc string) error {
		_, err := root.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(testBucket), Policy: aws.String(doc)})
		return err
	}
	// MinIO does not know the conditional-write keys: the whole policy is
	// refused, which is why the lease-overwrite refusal is AWS's alone.
	if err := setPolicy(full); err == nil || !strings.Contains(err.Error(), "s3:if-") {
		t.Errorf("MinIO accepted a policy with s3:if-none-match/s3:if-match conditions (%v): enforce the lease statement here too", err)
	} else {
		t.Logf("MinIO refuses DenyUnconditionalLeaseWrites: %v", err)
	}
	without := func(sids ...string) string {
		var doc map[string]any
		if err := json.Unmarshal([]byte(full), &doc); err != nil {
			t.Fatal(err)
		}
		var keep []any
		for _, s := range doc["Statement"].([]any) {
			drop := false
			for _, sid := range sids {
				drop = drop || s.(map[string]any)["Sid"] == sid
			}
			if !drop {
				keep = append(keep, s)
			}
		}
		doc["Statement"] = keep
		b, _ := json.Marshal(doc)
		return string(b)
	}
	anon := func(key string) int {
		resp, err := http.Get(m.Endpoint + "/" + testBucket + "/" + key)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Over plain HTTP (this MinIO has no TLS), DenyInsecureTransport
	// refuses even what the policy makes public.
	if err := setPolicy(without("DenyUnconditionalLeaseWrites")); err != nil {
		t.Fatal(err)
	}
	if got := anon("nix-cache-info"); got != http.StatusForbidden {
		t.Errorf("anonymous GET over plain HTTP: %d, want 403 (DenyInsecureTransport)", got)
	}
	// The public statement alone: exactly what a substituter fetches.
	if err := setPolicy(without("DenyUnconditionalLeaseWrites", "DenyInsecureTransport")); err != nil {
		t.Fatal(err)
	}
	var narinfo, nar string
	for _, k := range appKeys {
		if strings.HasPrefix(k, "nar/") {
			nar = k
		} else if narinfo == "" {
			narinfo = k
		}
	}
	for key, want := range map[string]int{"nix-cache-info": 200, narinfo: 200, nar: 200, "gcroots/app": 403, ".kiss/memo/v2": 403, "gcroots/.lock/prune": 403} {
		if got := anon(key); got != want {
			t.Errorf("anonymous GET %s: %d, want %d", key, got, want)
		}
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, m.Endpoint+"/"+testBucket+"/"+narinfo, strings.NewReader("x"))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous PUT: %v %v, want 403", resp, err)
	}
	if _, err := root.DeleteBucketPolicy(ctx, &s3.DeleteBucketPolicyInput{Bucket: aws.String(testBucket)}); err != nil {
		t.Fatal(err)
	}
}

// --- S3 helpers ---

type putOpt func(*s3.PutObjectInput)

func ifNoneMatch(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") }

func put(ctx context.Context, c *s3.Client, key, body string, opts ...putOpt) error {
	in := &s3.PutObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key), Body: strings.NewReader(body)}
	for _, o := range opts {
		o(in)
	}
	_, err := c.PutObject(ctx, in)
	return err
}

func del(ctx context.Context, c *s3.Client, key string) error {
	_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	return err
}

// delMany is a DeleteObjects batch; per-key refusals come back as one
// AccessDenied error.
func delMany(ctx context.Context, c *s3.Client, keys []string) error {
	var ids []s3types.ObjectIdentifier
	for _, k := range keys {
		ids = append(ids, s3types.ObjectIdentifier{Key: aws.String(k)})
	}
	out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(testBucket), Delete: &s3types.Delete{Objects: ids}})
	if err != nil {
		return err
	}
	for _, e := range out.Errors {
		if aws.ToString(e.Code) != "AccessDenied" {
			return errors.New("DeleteObjects: " + aws.ToString(e.Code) + " " + aws.ToString(e.Key))
		}
	}
	if len(out.Errors) != len(keys) {
		return errors.New("DeleteObjects deleted some keys")
	}
	return &smithy.GenericAPIError{Code: "AccessDenied", Message: "every key refused"}
}

func getErr(ctx context.Context, c *s3.Client, key string) error {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err == nil {
		out.Body.Close()
	}
	return err
}

func get(ctx context.Context, t *testing.T, c *s3.Client, key string) string {
	t.Helper()
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return string(b)
}

func accessDenied(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && ae.ErrorCode() == "AccessDenied"
}

func exists(ctx context.Context, t *testing.T, c *s3.Client, key string) bool {
	t.Helper()
	_, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(testBucket), Key: aws.String(key)})
	var nf *s3types.NotFound
	if err != nil && !errors.As(err, &nf) {
		t.Fatalf("HEAD %s: %v", key, err)
	}
	return err == nil
}

func requirePresent(ctx context.Context, t *testing.T, c *s3.Client, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if !exists(ctx, t, c, k) {
			t.Errorf("%s is missing", k)
		}
	}
}

func requireAbsent(ctx context.Context, t *testing.T, c *s3.Client, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if exists(ctx, t, c, k) {
			t.Errorf("%s is still there", k)
		}
	}
}

func requireAbsentPrefix(ctx context.Context, t *testing.T, c *s3.Client, prefix string) {
	t.Helper()
	out, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(testBucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		t.Errorf("left behind: %s", aws.ToString(o.Key))
	}
}

var narURL = regexp.MustCompile(`(?m)^URL: (\S+)$`)

// cacheKeys is the narinfo and NAR keys of store paths (not closures).
func cacheKeys(ctx context.Context, t *testing.T, c *s3.Client, paths ...string) []string {
	t.Helper()
	var keys []string
	for _, p := range paths {
		ni := testenv.StoreHash(p) + ".narinfo"
		m := narURL.FindStringSubmatch(get(ctx, t, c, ni))
		if m == nil {
			t.Fatalf("%s has no URL", ni)
		}
		keys = append(keys, ni, m[1])
	}
	return keys
}

// startServe runs kiss serve with env on a free loopback port.
func startServe(t *testing.T, env []string, store string, args ...string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	cmd := exec.Command(testenv.KissBinary(t), append([]string{"serve", "--store", store, "--listen", addr}, args...)...)
	cmd.Env = env
	testenv.StartProcess(t, "kiss-serve", cmd)
	if err := testenv.WaitTCP(addr, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}
