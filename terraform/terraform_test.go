package terraform_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/gc"
	"github.com/kiss-cache/kiss/internal/testenv"
)

// Every module and example of the tree, each validated, and each module's
// own `terraform test` run, with the real AWS provider from the offline
// mirror. Examples are planned (fake credentials, no AWS call) and the
// rendered plan (`terraform show -json`) is asserted on below.
var (
	modules  = []string{"modules/kiss-cache-s3", "modules/kiss-prune-lambda"}
	examples = []string{"examples/basic", "examples/complete"}
)

const testBucket = "kiss-plan-test"

// tree returns a private copy of terraform/ to run terraform in.
func tree(t *testing.T) *testenv.TerraformEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("runs terraform (about a minute): not in -short")
	}
	return testenv.Terraform(t, filepath.Join(testenv.ModuleRoot(), "terraform"))
}

// TestTreeIsComplete keeps the lists above in step with the directories, so
// a new module or example cannot go untested.
func TestTreeIsComplete(t *testing.T) {
	for _, kind := range []string{"modules", "examples"} {
		ents, err := os.ReadDir(kind)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			if e.IsDir() {
				got = append(got, kind+"/"+e.Name())
			}
		}
		want := map[string][]string{"modules": modules, "examples": examples}[kind]
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: directories %q, tested %q", kind, got, want)
		}
	}
}

func TestFormatted(t *testing.T) {
	tf := tree(t)
	if out, err := tf.Try(".", "fmt", "-check", "-recursive", "-diff", "-no-color"); err != nil {
		t.Errorf("terraform fmt -check: %v\n%s", err, out)
	}
}

// TestModules validates each module and runs its tests/*.tftest.hcl.
func TestModules(t *testing.T) {
	tf := tree(t)
	for _, m := range modules {
		t.Run(filepath.Base(m), func(t *testing.T) {
			t.Parallel()
			tf.Init(t, m)
			tf.Run(t, m, "validate", "-no-color")
			out := tf.Run(t, m, "test", "-no-color")
			t.Logf("terraform test %s:\n%s", m, out)
			runs := regexp.MustCompile(`(?m)^\s*run "[^"]+"\.\.\. pass$`).FindAllString(out, -1)
			if len(runs) < 5 || !strings.Contains(out, fmt.Sprintf("Success! %d passed, 0 failed.", len(runs))) {
				t.Errorf("terraform test %s: %d runs passed; output:\n%s", m, len(runs), out)
			}
		})
	}
}

// lambdaPackage stands in for the deployment package at plan time (its
// hash is all a plan reads).
func lambdaPackage(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kiss-lambda.zip")
	if err := os.WriteFile(p, []byte("PK\x05\x06"+strings.Repeat("\x00", 18)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	planMu    sync.Mutex
	planCache = map[string]*testenv.TerraformPlan{}
)

// examplePlan validates and plans an example once per test binary (the
// role-enforcement tests read the same plan).
func examplePlan(t *testing.T, ex string) *testenv.TerraformPlan {
	t.Helper()
	planMu.Lock()
	defer planMu.Unlock()
	if p := planCache[ex]; p != nil {
		return p
	}
	tf := tree(t)
	tf.Init(t, ex)
	tf.Run(t, ex, "validate", "-no-color")
	vars := map[string]string{"bucket_name": testBucket, "ci_role_arns": `["arn:aws:iam::123456789012:role/ci"]`}
	if ex == "examples/complete" {
		vars["package_zip"] = lambdaPackage(t)
	}
	start := time.Now()
	p := tf.Plan(t, ex, vars)
	t.Logf("%s planned in %.1fs: %d resources", ex, time.Since(start).Seconds(), len(p.Changes()))
	planCache[ex] = p
	return p
}

func TestExamplesPlan(t *testing.T) {
	for _, ex := range examples {
		t.Run(filepath.Base(ex), func(t *testing.T) {
			t.Parallel()
			p := examplePlan(t, ex)
			adds := 0
			for addr, actions := range p.Changes() {
				if !reflect.DeepEqual(actions, []string{"create"}) {
					t.Errorf("%s: %v, want create", addr, actions)
				}
				adds++
			}
			if !strings.Contains(p.Text, fmt.Sprintf("Plan: %d to add, 0 to change, 0 to destroy.", adds)) {
				t.Errorf("plan summary does not say %d to add:\n%s", adds, p.Text)
			}
			t.Logf("%s: Plan: %d to add", ex, adds)
			checkBucket(t, p, ex)
			checkRolePolicies(t, p)
			if ex == "examples/complete" {
				checkCDN(t, p)
				checkPruneFunction(t, p)
			}
		})
	}
}

// --- the rendered plan ---

// attrs returns a planned resource's attributes, failing if it is absent.
func attrs(t *testing.T, p *testenv.TerraformPlan, addr string) (after, unknown map[string]any) {
	t.Helper()
	after, unknown = p.After(addr)
	if after == nil {
		t.Fatalf("no %s in the plan", addr)
	}
	return after, unknown
}

// at walks decoded JSON: string keys index objects, ints index arrays.
func at(v any, path ...any) any {
	for _, k := range path {
		switch k := k.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			l, _ := v.([]any)
			if k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

// statement is one statement of a policy document, normalised: actions and
// resources sorted, conditions flattened to "operator key=values".
type statement struct {
	Effect     string
	Actions    []string
	Resources  []string
	Principal  string
	Conditions []string
}

// policy decodes a policy document into its statements by Sid.
func policy(t *testing.T, doc any) map[string]statement {
	t.Helper()
	s, ok := doc.(string)
	if !ok {
		t.Fatalf("policy document is not known at plan time: %#v", doc)
	}
	var d struct {
		Version   string
		Statement []struct {
			Sid       string
			Effect    string
			Action    any
			Resource  any
			Principal any
			Condition map[string]map[string]any
		}
	}
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("policy document: %v\n%s", err, s)
	}
	if d.Version != "2012-10-17" {
		t.Errorf("policy version %q", d.Version)
	}
	list := func(v any) []string {
		var out []string
		switch v := v.(type) {
		case string:
			out = []string{v}
		case []any:
			for _, x := range v {
				out = append(out, x.(string))
			}
		}
		sort.Strings(out)
		return out
	}
	out := map[string]statement{}
	for _, st := range d.Statement {
		n := statement{Effect: st.Effect, Actions: list(st.Action), Resources: list(st.Resource)}
		if st.Principal != nil {
			b, _ := json.Marshal(st.Principal)
			n.Principal = string(b)
		}
		for op, kv := range st.Condition {
			for k, v := range kv {
				n.Conditions = append(n.Conditions, op+" "+k+"="+strings.Join(list(v), ","))
			}
		}
		sort.Strings(n.Conditions)
		if _, dup := out[st.Sid]; dup || st.Sid == "" {
			t.Errorf("statement Sid %q missing or repeated", st.Sid)
		}
		out[st.Sid] = n
	}
	return out
}

func arns(keys ...string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = "arn:aws:s3:::" + testBucket + k
	}
	sort.Strings(out)
	return out
}

func samePolicy(t *testing.T, name string, got, want map[string]statement) {
	t.Helper()
	for sid, w := range want {
		if w.Actions != nil {
			sort.Strings(w.Actions)
		}
		if g, ok := got[sid]; !ok || !reflect.DeepEqual(g, w) {
			t.Errorf("%s statement %s:\n got %+v\nwant %+v", name, sid, got[sid], w)
		}
	}
	for sid := range got {
		if _, ok := want[sid]; !ok {
			t.Errorf("%s has an unexpected statement %s: %+v", name, sid, got[sid])
		}
	}
}

// checkRolePolicies asserts the three role policies as planned: exactly
// these statements (least privilege is then enforced for real against
// MinIO in minio_test.go).
func checkRolePolicies(t *testing.T, p *testenv.TerraformPlan) {
	read := statement{Effect: "Allow", Actions: []string{"s3:GetObject"}, Resources: arns("/*")}
	list := statement{Effect: "Allow", Actions: []string{"s3:GetBucketLocation", "s3:ListBucket"}, Resources: arns("")}
	want := map[string]map[string]statement{
		"reader": {"ReadObjects": read, "ListBucket": list},
		"writer": {
			"ReadObjects": read,
			"UploadCacheObjectsMarkersLeases": {Effect: "Allow", Actions: []string{"s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:PutObject"},
				Resources: arns("/nar/*", "/*.narinfo", "/*.ls", "/log/*", "/realisations/*", "/build-trace-v2/*", "/debuginfo/*", "/gcroots/*")},
			"DeleteMarkersAndLeases": {Effect: "Allow", Actions: []string{"s3:DeleteObject"}, Resources: arns("/gcroots/*")},
			// Unconditional: on AWS a missing key is a 404 only with it.
			"ListBucket": list,
			"NeverPrunerObjects": {Effect: "Deny", Actions: []string{"s3:DeleteObject", "s3:PutObject"},
				Resources: arns("/.kiss/*", "/nix-cache-info", "/gcroots/.lock/prune")},
		},
		"pruner": {
			"ReadObjects":   read,
			"DeleteObjects": {Effect: "Allow", Actions: []string{"s3:DeleteObject"}, Resources: arns("/*")},
			"WriteLeaseAndMemo": {Effect: "Allow", Actions: []string{"s3:AbortMultipartUpload", "s3:PutObject"},
				Resources: arns("/gcroots/.lock/prune", "/.kiss/*")},
			"ListBucket":         list,
			"NeverCacheIdentity": {Effect: "Deny", Actions: []string{"s3:DeleteObject", "s3:PutObject"}, Resources: arns("/nix-cache-info")},
		},
	}
	docs := outputPolicies(t, p)
	for role, w := range want {
		samePolicy(t, role+" policy", policy(t, docs[role]), w)
		after, _ := attrs(t, p, `module.cache.aws_iam_policy.this["`+role+`"]`)
		if after["policy"] != docs[role] {
			t.Errorf("the %s IAM policy is not the policy_documents output", role)
		}
	}
}

// outputPolicies is the cache module's policy_documents, as the example's
// plan renders it (read from the module's IAM policies).
func outputPolicies(t *testing.T, p *testenv.TerraformPlan) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, role := range []string{"reader", "writer", "pruner"} {
		after, _ := attrs(t, p, `module.cache.aws_iam_policy.this["`+role+`"]`)
		s, ok := after["policy"].(string)
		if !ok {
			t.Fatalf("the %s policy is not known at plan time", role)
		}
		out[role] = s
	}
	return out
}

func checkBucket(t *testing.T, p *testenv.TerraformPlan, ex string) {
	public := ex == "examples/basic"
	pab, _ := attrs(t, p, "module.cache.aws_s3_bucket_public_access_block.this")
	wantPAB := map[string]any{"block_public_acls": true, "ignore_public_acls": true, "block_public_policy": !public, "restrict_public_buckets": !public}
	for k, v := range wantPAB {
		if pab[k] != v {
			t.Errorf("public access block %s = %v, want %v", k, pab[k], v)
		}
	}
	if v, _ := attrs(t, p, "module.cache.aws_s3_bucket_versioning.this"); at(v, "versioning_configuration", 0, "status") != "Enabled" {
		t.Errorf("versioning %v", v)
	}
	if o, _ := attrs(t, p, "module.cache.aws_s3_bucket_ownership_controls.this"); at(o, "rule", 0, "object_ownership") != "BucketOwnerEnforced" {
		t.Errorf("ownership %v", o)
	}
	if s, _ := attrs(t, p, "module.cache.aws_s3_bucket_server_side_encryption_configuration.this"); at(s, "rule", 0, "apply_server_side_encryption_by_default", 0, "sse_algorithm") != "AES256" {
		t.Errorf("encryption %v", s)
	}
	info, _ := attrs(t, p, "module.cache.aws_s3_object.nix_cache_info")
	if info["key"] != "nix-cache-info" || info["content"] != "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n" {
		t.Errorf("nix-cache-info %v %q", info["key"], info["content"])
	}

	lc, _ := attrs(t, p, "module.cache.aws_s3_bucket_lifecycle_configuration.this")
	rules := map[string]string{}
	for _, r := range at(lc, "rule").([]any) {
		rules[at(r, "id").(string)] = fmt.Sprintf("%v abort=%v noncurrent=%v delete-markers=%v filter-prefix=%q",
			at(r, "status"), at(r, "abort_incomplete_multipart_upload", 0, "days_after_initiation"),
			at(r, "noncurrent_version_expiration", 0, "noncurrent_days"), at(r, "expiration", 0, "expired_object_delete_marker"),
			at(r, "filter", 0, "prefix"))
	}
	wantRules := map[string]string{
		"abort-incomplete-multipart-uploads": `Enabled abort=1 noncurrent=<nil> delete-markers=<nil> filter-prefix=""`,
		"undelete-window":                    `Enabled abort=<nil> noncurrent=14 delete-markers=true filter-prefix=""`,
	}
	if !reflect.DeepEqual(rules, wantRules) {
		t.Errorf("lifecycle rules\n got %v\nwant %v", rules, wantRules)
	}

	bp, unknown := attrs(t, p, "module.cache.aws_s3_bucket_policy.this")
	if !public {
		// With the CDN the policy names the distribution's ARN, known only
		// after apply; the module's own tests render it (tests/cache.tftest.hcl).
		if unknown["policy"] != true {
			t.Errorf("the CDN bucket policy should wait for the distribution's ARN: %v", bp["policy"])
		}
		return
	}
	samePolicy(t, "bucket policy", policy(t, bp["policy"]), map[string]statement{
		"DenyInsecureTransport": {Effect: "Deny", Actions: []string{"s3:*"}, Resources: arns("", "/*"), Principal: `"*"`,
			Conditions: []string{"Bool aws:SecureTransport=false"}},
		"DenyUnconditionalLeaseWrites": {Effect: "Deny", Actions: []string{"s3:PutObject"}, Resources: arns("/gcroots/.lock/*"), Principal: `"*"`,
			Conditions: []string{"Null s3:if-match=true", "Null s3:if-none-match=true"}},
		"PublicReadForSubstituters": {Effect: "Allow", Actions: []string{"s3:GetObject"}, Resources: arns("/nix-cache-info", "/*.narinfo", "/nar/*"), Principal: `"*"`},
	})
	if got := p.Output("substituter_url"); got != nil {
		t.Errorf("substituter_url %v is known before apply?", got)
	}
}

// checkCDN: one behaviour per key kind, in the order that keeps gcroots/
// and .kiss/ from ever matching a cacheable pattern, and TTLs that bound
// how long a pruned path is still offered.
func checkCDN(t *testing.T, p *testenv.TerraformPlan) {
	d, unknown := attrs(t, p, "module.cache.aws_cloudfront_distribution.this[0]")
	var patterns []string
	for i, b := range at(d, "ordered_cache_behavior").([]any) {
		pat := at(b, "path_pattern").(string)
		patterns = append(patterns, pat)
		denied := pat == "gcroots/*" || pat == ".kiss/*"
		if fn := at(unknown, "ordered_cache_behavior", i, "function_association", 0, "function_arn"); (fn == true) != denied {
			t.Errorf("behaviour %s: not-found function %v", pat, fn)
		}
		if denied && at(b, "cache_policy_id") != "4135ea2d-6df8-44a3-9df3-4b5a84be39ad" {
			t.Errorf("behaviour %s is cached (%v)", pat, at(b, "cache_policy_id"))
		}
		if at(b, "viewer_protocol_policy") != "https-only" || !reflect.DeepEqual(at(b, "allowed_methods"), []any{"GET", "HEAD"}) {
			t.Errorf("behaviour %s: %v %v", pat, at(b, "viewer_protocol_policy"), at(b, "allowed_methods"))
		}
	}
	if want := []string{"gcroots/*", ".kiss/*", "nar/*", "*.narinfo", "nix-cache-info"}; !reflect.DeepEqual(patterns, want) {
		t.Errorf("behaviours %q, want %q", patterns, want)
	}
	if at(d, "default_cache_behavior", 0, "cache_policy_id") != "4135ea2d-6df8-44a3-9df3-4b5a84be39ad" || at(unknown, "default_cache_behavior", 0, "function_association", 0, "function_arn") != true {
		t.Errorf("anything else must be refused uncached: %v", at(d, "default_cache_behavior"))
	}
	errTTL := map[float64]any{}
	for _, r := range at(d, "custom_error_response").([]any) {
		errTTL[at(r, "error_code").(float64)] = at(r, "error_caching_min_ttl")
	}
	if !reflect.DeepEqual(errTTL, map[float64]any{403: 60.0, 404: 60.0}) {
		t.Errorf("negative caching %v", errTTL)
	}
	ttl := map[string][3]float64{}
	for _, kind := range []string{"nar", "narinfo", "cache-info"} {
		cp, _ := attrs(t, p, `module.cache.aws_cloudfront_cache_policy.this["`+kind+`"]`)
		ttl[kind] = [3]float64{cp["min_ttl"].(float64), cp["default_ttl"].(float64), cp["max_ttl"].(float64)}
	}
	want := map[string][3]float64{"nar": {0, 31536000, 31536000}, "narinfo": {0, 3600, 3600}, "cache-info": {0, 300, 300}}
	if !reflect.DeepEqual(ttl, want) {
		t.Errorf("cache TTLs %v, want %v", ttl, want)
	}
	// A narinfo the edge still serves after its path was pruned must not
	// outlive its NAR at the edge, and the edge must forget a narinfo
	// before a prune could delete a path pushed just after it was cached
	// (the grace period): narinfo TTL <= grace, <= NAR TTL.
	grace := gc.DefaultGrace
	if g, ok := scheduledEvent(t, p)["grace"].(string); ok {
		var err error
		if grace, err = time.ParseDuration(g); err != nil {
			t.Fatal(err)
		}
	}
	if n := time.Duration(ttl["narinfo"][2]) * time.Second; n > grace || ttl["narinfo"][2] > ttl["nar"][2] {
		t.Errorf("narinfo TTL %v: must be <= the prune grace %v and <= the NAR TTL", n, grace)
	}
}

func scheduledEvent(t *testing.T, p *testenv.TerraformPlan) map[string]any {
	t.Helper()
	s, _ := attrs(t, p, "module.prune.aws_scheduler_schedule.this")
	var ev map[string]any
	if err := json.Unmarshal([]byte(at(s, "target", 0, "input").(string)), &ev); err != nil {
		t.Fatal(err)
	}
	return ev
}

func checkPruneFunction(t *testing.T, p *testenv.TerraformPlan) {
	f, _ := attrs(t, p, "module.prune.aws_lambda_function.this")
	store := "s3://" + testBucket + "?region=eu-central-1"
	got := fmt.Sprintf("%v %v %v %v %v %v %v", f["runtime"], f["handler"], f["architectures"], f["timeout"], f["memory_size"], at(f, "ephemeral_storage", 0, "size"), at(f, "environment", 0, "variables", "KISS_STORE"))
	if want := "provided.al2023 bootstrap [arm64] 900 1024 2048 " + store; got != want {
		t.Errorf("function: %s, want %s", got, want)
	}
	if ev := scheduledEvent(t, p); !reflect.DeepEqual(ev, map[string]any{"store": store, "root_max_age": "30d", "lock_ttl": "5m", "lock_wait": "2m"}) {
		t.Errorf("scheduled event %v", ev)
	}
	s, _ := attrs(t, p, "module.prune.aws_scheduler_schedule.this")
	if at(s, "target", 0, "retry_policy", 0, "maximum_retry_attempts") != 0.0 || at(s, "flexible_time_window", 0, "mode") != "OFF" {
		t.Errorf("schedule %v", s)
	}
	if c, _ := attrs(t, p, "module.prune.aws_lambda_function_event_invoke_config.this"); c["maximum_retry_attempts"] != 0.0 {
		t.Errorf("async retries %v", c["maximum_retry_attempts"])
	}
	logs, _ := attrs(t, p, "module.prune.aws_iam_role_policy.logs")
	samePolicy(t, "logs policy", policy(t, logs["policy"]), map[string]statement{
		"WriteOwnLogs": {Effect: "Allow", Actions: []string{"logs:CreateLogStream", "logs:PutLogEvents"},
			Resources: []string{"arn:aws:logs:*:*:log-group:/aws/lambda/" + testBucket + "-prune:*"}},
	})
	// The function's role gets the cache's pruner policy and no other.
	refs := at(p.Configuration(), "root_module", "module_calls", "prune", "expressions", "pruner_policy_arn", "references")
	if l, _ := refs.([]any); len(l) == 0 || l[0] != `module.cache.policy_arns["pruner"]` {
		t.Errorf("pruner_policy_arn references %v", refs)
	}
	var attachments []string
	for addr := range p.Changes() {
		if strings.Contains(addr, "aws_iam_role_policy_attachment") && strings.HasPrefix(addr, "module.prune.") {
			attachments = append(attachments, addr)
		}
	}
	if !slices.Equal(attachments, []string{"module.prune.aws_iam_role_policy_attachment.pruner"}) {
		t.Errorf("policies attached to the function's role: %q", attachments)
	}
}
