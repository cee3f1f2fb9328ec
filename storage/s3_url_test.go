package storage

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseS3URL(t *testing.T) {
	good := []struct {
		in, endpoint string
		pathStyle    *bool
		condDelete   bool
	}{
		{"s3://b", "", nil, true},
		{"s3://b?region=eu-west-1", "", nil, true},
		{"s3://b?endpoint=127.0.0.1:9000&scheme=http", "http://127.0.0.1:9000", ptr(true), true},
		{"s3://b?endpoint=minio.example.org", "https://minio.example.org", ptr(true), true},
		{"s3://b?endpoint=http%3A%2F%2F127.0.0.1%3A7070&use_path_style=false", "http://127.0.0.1:7070", ptr(false), true},
		{"s3://b?endpoint=s3.example.org&addressing-style=virtual", "https://s3.example.org", ptr(false), true},
		{"s3://b?addressing-style=path&conditional_delete=false", "", ptr(true), false},
		{"s3://b?compression=zstd&secret-key=/k&write-nar-listing=true&profile=p", "", nil, true},
	}
	for _, g := range good {
		u, _ := url.Parse(g.in)
		c, err := parseS3URL(u)
		if err != nil {
			t.Errorf("%s: %v", g.in, err)
			continue
		}
		if got := c.gocloudParams.Get("endpoint"); got != g.endpoint {
			t.Errorf("%s: endpoint %q, want %q", g.in, got, g.endpoint)
		}
		if (c.usePathStyle == nil) != (g.pathStyle == nil) || (c.usePathStyle != nil && *c.usePathStyle != *g.pathStyle) {
			t.Errorf("%s: path style %v, want %v", g.in, c.usePathStyle, g.pathStyle)
		}
		if c.conditionalDelete != g.condDelete {
			t.Errorf("%s: conditional delete %v", g.in, c.conditionalDelete)
		}
		for _, k := range []string{"request_checksum_calculation", "response_checksum_validation"} {
			if c.gocloudParams.Get(k) != "when_required" {
				t.Errorf("%s: %s = %q, want when_required by default", g.in, k, c.gocloudParams.Get(k))
			}
		}
		for k := range c.gocloudParams {
			if strings.Contains("conditional_delete scheme addressing-style compression secret-key write-nar-listing", k) {
				t.Errorf("%s: kiss/Nix-only parameter %q handed to gocloud", g.in, k)
			}
		}
	}
	bad := map[string]string{
		"s3://":                                 "bucket name",
		"s3://b/prefix":                         "path",
		"s3://user:pw@b":                        "credentials",
		"s3://b?bogus=1":                        `unknown parameter "bogus"`,
		"s3://b?scheme=ftp":                     "http or https",
		"s3://b?addressing-style=sideways":      "path, virtual or auto",
		"s3://b?conditional_delete=maybe":       "not a boolean",
		"s3://b?endpoint=http://x&scheme=https": "contradicts",
		"s3://b?endpoint=ftp://x":               "not an http(s) URL",
		"s3://b?region=a&region=b":              "given 2 times",
		"s3://b?ssetype=rot13":                  "ssetype",
	}
	for in, want := range bad {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		_, err = parseS3URL(u)
		if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want ErrInvalidURL mentioning %q", in, err, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
