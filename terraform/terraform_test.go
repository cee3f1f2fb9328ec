package terraform_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/hashicorp/terraform-config-inspect/tfconfig"
	"github.com/zclconf/go-cty/cty"
)

const (
	moduleDir  = "modules/kiss-cache-s3"
	exampleDir = "examples/basic"
)

// tfFiles lists every .tf file under the terraform directory.
func tfFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && p != "." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(p, ".tf") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 8 {
		t.Fatalf("only %d .tf files: %v", len(files), files)
	}
	return files
}

// TestFormatted requires every file to be in canonical HCL format (the
// formatter behind `terraform fmt` / `tofu fmt`).
func TestFormatted(t *testing.T) {
	for _, f := range tfFiles(t) {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, diags := hclsyntax.ParseConfig(src, f, hcl.InitialPos); diags.HasErrors() {
			t.Errorf("%s: %s", f, diags.Error())
			continue
		}
		if got := hclwrite.Format(src); !bytes.Equal(got, src) {
			t.Errorf("%s is not formatted (tofu fmt); formatted version:\n%s", f, got)
		}
	}
}

// variableProblems returns what is wrong with a module's variables and
// outputs: every variable needs a type and a description, every output a
// description.
func variableProblems(mod *tfconfig.Module) []string {
	var p []string
	for n, v := range mod.Variables {
		if v.Type == "" {
			p = append(p, fmt.Sprintf("variable %q has no type", n))
		}
		if v.Description == "" {
			p = append(p, fmt.Sprintf("variable %q has no description", n))
		}
	}
	for n, o := range mod.Outputs {
		if o.Description == "" {
			p = append(p, fmt.Sprintf("output %q has no description", n))
		}
	}
	sort.Strings(p)
	return p
}

func loadModule(t *testing.T, dir string) *tfconfig.Module {
	t.Helper()
	mod, diags := tfconfig.LoadModule(dir)
	if diags.HasErrors() {
		t.Fatalf("%s: %v", dir, diags.Err())
	}
	return mod
}

func TestModuleInterface(t *testing.T) {
	mod := loadModule(t, moduleDir)
	if p := variableProblems(mod); len(p) > 0 {
		t.Errorf("%s: %q", moduleDir, p)
	}
	var required []string
	for n, v := range mod.Variables {
		if v.Required {
			required = append(required, n)
		}
	}
	if !reflect.DeepEqual(required, []string{"bucket_name"}) {
		t.Errorf("required variables %q, want only bucket_name", required)
	}
	wantTypes := map[string]string{
		"bucket_name": "string", "force_destroy": "bool", "undelete_days": "number",
		"abort_incomplete_multipart_days": "number", "public_read": "bool",
		"require_conditional_lock_writes": "bool", "writer_principals": "list(string)",
		"pruner_principals": "list(string)", "reader_principals": "list(string)", "tags": "map(string)",
	}
	for n, typ := range wantTypes {
		if v, ok := mod.Variables[n]; !ok || v.Type != typ {
			t.Errorf("variable %s: %+v, want type %s", n, v, typ)
		}
	}
	for n, want := range map[string]any{"public_read": false, "undelete_days": 7.0, "abort_incomplete_multipart_days": 1.0, "require_conditional_lock_writes": true, "force_destroy": false} {
		if got := mod.Variables[n].Default; got != want {
			t.Errorf("variable %s default %v (%T), want %v", n, got, got, want)
		}
	}
	aws, ok := mod.RequiredProviders["aws"]
	if !ok || aws.Source != "hashicorp/aws" || len(aws.VersionConstraints) == 0 {
		t.Errorf("required_providers.aws = %+v", aws)
	}
	var resources []string
	for k := range mod.ManagedResources {
		resources = append(resources, k)
	}
	sort.Strings(resources)
	want := []string{
		"aws_iam_policy.this", "aws_iam_role.this", "aws_iam_role_policy_attachment.this",
		"aws_s3_bucket.this", "aws_s3_bucket_lifecycle_configuration.this", "aws_s3_bucket_ownership_controls.this",
		"aws_s3_bucket_policy.this", "aws_s3_bucket_public_access_block.this",
		"aws_s3_bucket_server_side_encryption_configuration.this", "aws_s3_bucket_versioning.this",
	}
	if !reflect.DeepEqual(resources, want) {
		t.Errorf("resources\n got %q\nwant %q", resources, want)
	}
	var outputs []string
	for k := range mod.Outputs {
		outputs = append(outputs, k)
	}
	sort.Strings(outputs)
	if !reflect.DeepEqual(outputs, []string{"bucket_arn", "bucket_name", "bucket_region", "policy_arns", "role_arns", "store_url", "substituter_url"}) {
		t.Errorf("outputs %q", outputs)
	}
}

// TestVariableChecksCatchProblems makes sure variableProblems fails on a
// module that breaks the rules (so TestModuleInterface can fail).
func TestVariableChecksCatchProblems(t *testing.T) {
	dir := t.TempDir()
	src := "variable \"a\" {}\nvariable \"b\" {\n  type = string\n}\noutput \"o\" {\n  value = var.a\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.tf"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	got := variableProblems(loadModule(t, dir))
	want := []string{`output "o" has no description`, `variable "a" has no description`, `variable "a" has no type`, `variable "b" has no description`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems %q, want %q", got, want)
	}
}

// hclFile parses one file into its syntax tree.
type hclFile struct {
	name string
	src  []byte
	body *hclsyntax.Body
}

func parse(t *testing.T, path string) *hclFile {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", path, diags.Error())
	}
	return &hclFile{name: path, src: f.Bytes, body: f.Body.(*hclsyntax.Body)}
}

// block finds the first block of a type whose labels start with labels.
func block(body *hclsyntax.Body, typ string, labels ...string) *hclsyntax.Block {
	for _, b := range body.Blocks {
		if b.Type == typ && len(b.Labels) >= len(labels) && reflect.DeepEqual(b.Labels[:len(labels)], labels) {
			return b
		}
	}
	return nil
}

func mustBlock(t *testing.T, body *hclsyntax.Body, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	b := block(body, typ, labels...)
	if b == nil {
		t.Fatalf("no %s %q block", typ, labels)
	}
	return b
}

// expr returns an attribute's expression source text ("" when absent).
func (f *hclFile) expr(body *hclsyntax.Body, name string) string {
	a, ok := body.Attributes[name]
	if !ok {
		return ""
	}
	r := a.Expr.Range()
	return string(f.src[r.Start.Byte:r.End.Byte])
}

// strList evaluates a literal list-of-strings attribute.
func strList(t *testing.T, body *hclsyntax.Body, name string) []string {
	t.Helper()
	a, ok := body.Attributes[name]
	if !ok {
		return nil
	}
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		t.Fatalf("%s is not a literal: %s", name, diags.Error())
	}
	var out []string
	for it := v.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.Type() != cty.String {
			t.Fatalf("%s has a non-string element", name)
		}
		out = append(out, e.AsString())
	}
	return out
}

// dynamicContent returns the content block of `dynamic "<name>"` blocks
// whose for_each mentions marker.
func dynamicContent(body *hclsyntax.Body, f *hclFile, name, marker string) *hclsyntax.Body {
	for _, b := range body.Blocks {
		if b.Type == "dynamic" && len(b.Labels) == 1 && b.Labels[0] == name && strings.Contains(f.expr(b.Body, "for_each"), marker) {
			if c := block(b.Body, "content"); c != nil {
				return c.Body
			}
		}
	}
	return nil
}

func TestBucketProtections(t *testing.T) {
	f := parse(t, filepath.Join(moduleDir, "main.tf"))
	ver := mustBlock(t, f.body, "resource", "aws_s3_bucket_versioning", "this")
	if got := f.expr(mustBlock(t, ver.Body, "versioning_configuration").Body, "status"); got != `"Enabled"` {
		t.Errorf("versioning status %s", got)
	}
	lc := mustBlock(t, f.body, "resource", "aws_s3_bucket_lifecycle_configuration", "this")
	abort := mustBlock(t, mustBlock(t, lc.Body, "rule").Body, "abort_incomplete_multipart_upload")
	if got := f.expr(abort.Body, "days_after_initiation"); got != "var.abort_incomplete_multipart_days" {
		t.Errorf("abort multipart after %s", got)
	}
	undelete := dynamicContent(lc.Body, f, "rule", "var.undelete_days")
	if undelete == nil {
		t.Fatal("no undelete-window rule")
	}
	if got := f.expr(mustBlock(t, undelete, "noncurrent_version_expiration").Body, "noncurrent_days"); got != "rule.value" {
		t.Errorf("noncurrent_days = %s", got)
	}
	if !strings.Contains(f.expr(lc.Body, "depends_on"), "aws_s3_bucket_versioning.this") {
		t.Error("lifecycle rules do not wait for versioning")
	}
	pab := mustBlock(t, f.body, "resource", "aws_s3_bucket_public_access_block", "this")
	for attr, want := range map[string]string{"block_public_acls": "true", "ignore_public_acls": "true", "block_public_policy": "!var.public_read", "restrict_public_buckets": "!var.public_read"} {
		if got := f.expr(pab.Body, attr); got != want {
			t.Errorf("public access block %s = %s, want %s", attr, got, want)
		}
	}
	own := mustBlock(t, f.body, "resource", "aws_s3_bucket_ownership_controls", "this")
	if got := f.expr(mustBlock(t, own.Body, "rule").Body, "object_ownership"); got != `"BucketOwnerEnforced"` {
		t.Errorf("object ownership %s (ACLs must stay off)", got)
	}
}

func TestBucketPolicy(t *testing.T) {
	f := parse(t, filepath.Join(moduleDir, "main.tf"))
	doc := mustBlock(t, f.body, "data", "aws_iam_policy_document", "bucket")

	lease := dynamicContent(doc.Body, f, "statement", "var.require_conditional_lock_writes")
	if lease == nil {
		t.Fatal("no conditional lease-write statement")
	}
	if f.expr(lease, "effect") != `"Deny"` || !reflect.DeepEqual(strList(t, lease, "actions"), []string{"s3:PutObject"}) {
		t.Errorf("lease statement: effect %s actions %q", f.expr(lease, "effect"), strList(t, lease, "actions"))
	}
	if got := f.expr(lease, "resources"); got != `["${local.bucket_arn}/gcroots/.lock/*"]` {
		t.Errorf("lease statement resources %s", got)
	}
	conds := map[string]string{}
	for _, c := range lease.Blocks {
		if c.Type == "condition" {
			conds[strings.Trim(f.expr(c.Body, "variable"), `"`)] = f.expr(c.Body, "test") + " " + f.expr(c.Body, "values")
		}
	}
	want := map[string]string{"s3:if-none-match": `"Null" ["true"]`, "s3:if-match": `"Null" ["true"]`}
	if !reflect.DeepEqual(conds, want) {
		t.Errorf("lease conditions %v, want %v (deny only when both headers are missing)", conds, want)
	}

	public := dynamicContent(doc.Body, f, "statement", "var.public_read")
	if public == nil {
		t.Fatal("no public-read statement")
	}
	if f.expr(public, "effect") != `"Allow"` || !reflect.DeepEqual(strList(t, public, "actions"), []string{"s3:GetObject"}) || f.expr(public, "resources") != "local.public_object_arns" {
		t.Errorf("public statement: %s %q %s", f.expr(public, "effect"), strList(t, public, "actions"), f.expr(public, "resources"))
	}
	locals := mustBlock(t, f.body, "locals")
	if got := f.expr(locals.Body, "public_object_arns"); !strings.Contains(got, `"${local.bucket_arn}/nix-cache-info"`) ||
		!strings.Contains(got, `"${local.bucket_arn}/*.narinfo"`) || !strings.Contains(got, `"${local.bucket_arn}/nar/*"`) ||
		strings.Count(got, "${local.bucket_arn}") != 3 {
		t.Errorf("public objects %s: want exactly nix-cache-info, *.narinfo and nar/*", got)
	}

	tls := false
	for _, s := range doc.Body.Blocks {
		if s.Type == "statement" && f.expr(s.Body, "sid") == `"DenyInsecureTransport"` {
			tls = f.expr(s.Body, "effect") == `"Deny"`
		}
	}
	if !tls {
		t.Error("no DenyInsecureTransport statement")
	}
	pol := mustBlock(t, f.body, "resource", "aws_s3_bucket_policy", "this")
	if !strings.Contains(f.expr(pol.Body, "depends_on"), "aws_s3_bucket_public_access_block.this") {
		t.Error("bucket policy does not wait for the public access block")
	}
}

// statements maps each statement's sid of an aws_iam_policy_document to
// its actions and resources source.
func statements(t *testing.T, f *hclFile, name string) map[string][2]string {
	t.Helper()
	doc := mustBlock(t, f.body, "data", "aws_iam_policy_document", name)
	out := map[string][2]string{}
	for _, s := range doc.Body.Blocks {
		if s.Type == "statement" {
			out[strings.Trim(f.expr(s.Body, "sid"), `"`)] = [2]string{strings.Join(strList(t, s.Body, "actions"), ","), f.expr(s.Body, "resources")}
		}
	}
	return out
}

func TestIAMSeparation(t *testing.T) {
	f := parse(t, filepath.Join(moduleDir, "iam.tf"))
	deleters := map[string][]string{}
	for _, role := range []string{"reader", "writer", "pruner"} {
		for sid, s := range statements(t, f, role) {
			if strings.Contains(s[0], "s3:DeleteObject") {
				deleters[role] = append(deleters[role], s[1])
			}
			if role == "reader" && (strings.Contains(s[0], "Put") || strings.Contains(s[0], "Delete")) {
				t.Errorf("reader statement %s may write: %s", sid, s[0])
			}
			if strings.Contains(s[0], "*") && !strings.HasPrefix(s[0], "sts") {
				t.Errorf("%s statement %s uses a wildcard action: %s", role, sid, s[0])
			}
		}
	}
	want := map[string][]string{
		"writer": {`["${local.bucket_arn}/gcroots/*"]`},
		"pruner": {`["${local.bucket_arn}/*"]`},
	}
	if !reflect.DeepEqual(deleters, want) {
		t.Errorf("DeleteObject grants %v, want %v (writers delete only markers and leases)", deleters, want)
	}
	ws := statements(t, f, "writer")
	if ws["ReadAndUpload"][0] == "" || !strings.Contains(ws["ReadAndUpload"][0], "s3:PutObject") {
		t.Errorf("writer cannot upload: %v", ws)
	}
	role := mustBlock(t, f.body, "resource", "aws_iam_role", "this")
	if got := f.expr(role.Body, "for_each"); got != "data.aws_iam_policy_document.assume" {
		t.Errorf("roles for_each %s (roles only for non-empty principal lists)", got)
	}
	assume := mustBlock(t, f.body, "data", "aws_iam_policy_document", "assume")
	if got := f.expr(assume.Body, "for_each"); !strings.Contains(got, "length(v.principals) > 0") {
		t.Errorf("assume for_each %s", got)
	}
}

// TestExample checks that the example calls the module with arguments the
// module declares, including every required one.
func TestExample(t *testing.T) {
	ex := loadModule(t, exampleDir)
	if p := variableProblems(ex); len(p) > 0 {
		t.Errorf("%s: %q", exampleDir, p)
	}
	call, ok := ex.ModuleCalls["cache"]
	if !ok || call.Source != "../../modules/kiss-cache-s3" {
		t.Fatalf("module call %+v", call)
	}
	mod := loadModule(t, moduleDir)
	f := parse(t, filepath.Join(exampleDir, "main.tf"))
	args := mustBlock(t, f.body, "module", "cache").Body.Attributes
	for name := range args {
		if _, ok := mod.Variables[name]; !ok && name != "source" {
			t.Errorf("example passes %q, which the module does not declare", name)
		}
	}
	for name, v := range mod.Variables {
		if _, ok := args[name]; v.Required && !ok {
			t.Errorf("example misses required %q", name)
		}
	}
	for _, o := range []string{"store_url", "substituter_url", "role_arns"} {
		if _, ok := ex.Outputs[o]; !ok {
			t.Errorf("example has no output %s", o)
		}
		if _, ok := mod.Outputs[o]; !ok {
			t.Errorf("module has no output %s for the example", o)
		}
	}
}
