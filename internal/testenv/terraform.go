package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The Terraform the tests run: the preinstalled CLI and an offline mirror of
// the one provider kiss's modules use, at the version they were tested with.
const (
	DefaultTerraformPlugins = "/opt/tf-plugins"
	TerraformAWSProvider    = "registry.terraform.io/hashicorp/aws/5.100.0"
)

// TerraformEnv runs terraform offline on a private copy of a configuration
// tree: HOME, the CLI configuration and every data directory are temporary,
// providers come only from the mirror (-plugin-dir), and AWS is never
// contacted (plans use fake credentials and the provider's skip_* settings).
type TerraformEnv struct {
	Bin     string // the terraform binary
	Plugins string // the provider mirror
	Root    string // the copy of the tree given to Terraform
	home    string
}

// Terraform copies the tree at src (e.g. ModuleRoot()/terraform) into a temp
// dir and returns an environment to run terraform there. Without terraform
// (PATH or $KISS_TERRAFORM) or the provider mirror ($KISS_TF_PLUGINS, else
// /opt/tf-plugins, holding TerraformAWSProvider), the test is skipped and
// says so, or fails when CI or KISS_REQUIRE_TERRAFORM is set.
func Terraform(t testing.TB, src string) *TerraformEnv {
	t.Helper()
	bin, plugins, err := findTerraform()
	if err != nil {
		requireComponent(t, "terraform with the AWS provider mirror", err, "KISS_REQUIRE_TERRAFORM")
	}
	tmp := t.TempDir()
	e := &TerraformEnv{Bin: bin, Plugins: plugins, Root: filepath.Join(tmp, "tree"), home: filepath.Join(tmp, "home")}
	if err := os.MkdirAll(e.home, 0o755); err != nil {
		t.Fatal(err)
	}
	// An empty CLI configuration: nothing of the user's ~/.terraformrc.
	if err := os.WriteFile(filepath.Join(e.home, "terraformrc"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(src, e.Root); err != nil {
		t.Fatalf("testenv: copy %s: %v", src, err)
	}
	return e
}

func findTerraform() (bin, plugins string, err error) {
	bin = os.Getenv("KISS_TERRAFORM")
	if bin == "" {
		if bin, err = exec.LookPath("terraform"); err != nil {
			return "", "", fmt.Errorf("terraform not in PATH (nor $KISS_TERRAFORM): %w", err)
		}
	}
	plugins = os.Getenv("KISS_TF_PLUGINS")
	if plugins == "" {
		plugins = DefaultTerraformPlugins
	}
	if _, err := os.Stat(filepath.Join(plugins, TerraformAWSProvider)); err != nil {
		return "", "", fmt.Errorf("no provider mirror %s in %s ($KISS_TF_PLUGINS): %w", TerraformAWSProvider, plugins, err)
	}
	return bin, plugins, nil
}

// copyTree copies regular files and directories (no .terraform state).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() && (d.Name() == ".terraform" || d.Name() == ".tfdata") {
			return filepath.SkipDir
		}
		out := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(out, 0o755)
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".tfstate") || d.Name() == ".terraform.lock.hcl" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
}

// Dir is the copy of a directory of the tree (relative to it).
func (e *TerraformEnv) Dir(rel string) string { return filepath.Join(e.Root, rel) }

// Run runs terraform in the tree's directory rel and returns its stdout; a
// non-zero exit fails the test with both outputs.
func (e *TerraformEnv) Run(t testing.TB, rel string, args ...string) string {
	t.Helper()
	out, err := e.Try(rel, args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return out
}

// Try is Run returning the error (with stderr) instead of failing.
func (e *TerraformEnv) Try(rel string, args ...string) (string, error) {
	dir := e.Dir(rel)
	cmd := exec.Command(e.Bin, args...)
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(),
		"HOME="+e.home,
		"TF_CLI_CONFIG_FILE="+filepath.Join(e.home, "terraformrc"),
		"TF_DATA_DIR="+filepath.Join(dir, ".tfdata"),
		"TF_IN_AUTOMATION=1",
		"TF_INPUT=0",
		"CHECKPOINT_DISABLE=1",
		"AWS_EC2_METADATA_DISABLED=true",
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("terraform %s in %s (%.1fs): %v\n%s\n%s", strings.Join(args, " "), rel, time.Since(start).Seconds(), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// cleanEnv is the process environment without AWS and Terraform settings,
// so nothing of the developer's cloud configuration reaches a plan.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "TF_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Init runs terraform init in rel with providers from the mirror only.
func (e *TerraformEnv) Init(t testing.TB, rel string) {
	t.Helper()
	e.Run(t, rel, "init", "-backend=false", "-plugin-dir="+e.Plugins, "-input=false", "-no-color")
}

// OfflineProvider is an AWS provider configuration that plans without
// credentials or network: fake keys, and every check that would call AWS
// skipped.
const OfflineProvider = `provider "aws" {
  region                      = "eu-central-1"
  access_key                  = "kiss-test"
  secret_key                  = "kiss-test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
}
`

// Plan plans rel offline (OfflineProvider written as an override file)
// with the given variables, and returns the plan as `terraform show -json`
// renders it.
func (e *TerraformEnv) Plan(t testing.TB, rel string, vars map[string]string) *TerraformPlan {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.Dir(rel), "zz_kiss_test_override.tf"), []byte(OfflineProvider), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"plan", "-input=false", "-no-color", "-out=kiss-test.tfplan"}
	names := make([]string, 0, len(vars))
	for k := range vars {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		args = append(args, "-var", k+"="+vars[k])
	}
	text := e.Run(t, rel, args...)
	raw := e.Run(t, rel, "show", "-json", "kiss-test.tfplan")
	p := &TerraformPlan{Text: text, JSON: []byte(raw)}
	if err := json.Unmarshal(p.JSON, &p.plan); err != nil {
		t.Fatalf("testenv: terraform show -json: %v", err)
	}
	return p
}

// TerraformPlan is a rendered plan.
type TerraformPlan struct {
	Text string // what terraform plan printed
	JSON []byte // terraform show -json
	plan struct {
		ResourceChanges []struct {
			Address string `json:"address"`
			Mode    string `json:"mode"`
			Type    string `json:"type"`
			Change  struct {
				Actions      []string       `json:"actions"`
				After        map[string]any `json:"after"`
				AfterUnknown map[string]any `json:"after_unknown"`
			} `json:"change"`
		} `json:"resource_changes"`
		PlannedValues struct {
			Outputs map[string]struct {
				Value any `json:"value"`
			} `json:"outputs"`
		} `json:"planned_values"`
		Configuration map[string]any `json:"configuration"`
	}
}

// Changes returns the planned resource changes as address → actions
// (data sources read at plan time are not changes).
func (p *TerraformPlan) Changes() map[string][]string {
	out := map[string][]string{}
	for _, rc := range p.plan.ResourceChanges {
		if rc.Mode == "managed" {
			out[rc.Address] = rc.Change.Actions
		}
	}
	return out
}

// After returns the planned attributes of a resource (nil if absent) and
// which of them are unknown until apply.
func (p *TerraformPlan) After(address string) (after, unknown map[string]any) {
	for _, rc := range p.plan.ResourceChanges {
		if rc.Address == address {
			return rc.Change.After, rc.Change.AfterUnknown
		}
	}
	return nil, nil
}

// Output returns a planned output's value (nil when unknown or absent).
func (p *TerraformPlan) Output(name string) any {
	return p.plan.PlannedValues.Outputs[name].Value
}

// Configuration is the plan's "configuration" object (expressions and the
// references between modules).
func (p *TerraformPlan) Configuration() map[string]any { return p.plan.Configuration }
