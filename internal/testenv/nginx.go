package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// NginxServer is an nginx started by a test (`nginx -p PREFIX -c CONF -e
// stderr` with `daemon off`), stopped by PID in t.Cleanup.
type NginxServer struct {
	Prefix   string // nginx prefix dir: logs/, tmp/, conf/nginx.conf
	ConfFile string
	Proc     *Process
	// Listen holds every "host:port" from the config's listen directives.
	Listen []string
}

var listenRe = regexp.MustCompile(`(?m)^\s*listen\s+([0-9.]+:[0-9]+)`)

// Nginx starts nginx with the given http{} block contents (server blocks,
// maps, …) inside a generated main configuration that sets daemon off, a
// pid file, error log to stderr, temp paths under the prefix (same
// filesystem as the prefix, so PUT bodies are renamed atomically), the Nix
// content types and, as root, `user root` so workers can write test dirs.
// "{{PREFIX}}" in httpBlock is replaced by the prefix directory. It waits
// until every `listen 127.0.0.1:PORT` accepts connections.
func Nginx(t testing.TB, httpBlock string) *NginxServer {
	t.Helper()
	return NginxTuned(t, NginxTuning{}, httpBlock)
}

// NginxTuning sets nginx's process model; the zero value is one worker with
// 256 connections, enough for tests. Benchmarks ask for more.
type NginxTuning struct {
	Workers     string // worker_processes: "1" (default) or "auto"
	Connections int    // worker_connections (default 256)
	LogLevel    string // error_log level (default "info"; "warn" keeps a benchmark quiet)
}

// NginxTuned is Nginx with the process model set by tune.
func NginxTuned(t testing.TB, tune NginxTuning, httpBlock string) *NginxServer {
	t.Helper()
	if tune.Workers == "" {
		tune.Workers = "1"
	}
	if tune.Connections == 0 {
		tune.Connections = 256
	}
	if tune.LogLevel == "" {
		tune.LogLevel = "info"
	}
	prefix := t.TempDir()
	user := ""
	if os.Getuid() == 0 {
		user = "user root root;\n"
	}
	conf := fmt.Sprintf(`%[1]sworker_processes %[4]s;
daemon off;
pid %[2]s/nginx.pid;
error_log stderr %[6]s;
events { worker_connections %[5]d; }
http {
  access_log %[2]s/logs/access.log;
  client_body_temp_path %[2]s/tmp/body;
  proxy_temp_path %[2]s/tmp/proxy;
  fastcgi_temp_path %[2]s/tmp/fastcgi;
  uwsgi_temp_path %[2]s/tmp/uwsgi;
  scgi_temp_path %[2]s/tmp/scgi;
  types { text/x-nix-narinfo narinfo; application/x-nix-nar nar; text/plain ls; }
  default_type application/octet-stream;
  sendfile on;
  keepalive_requests 100000;
%[3]s
}
`, user, prefix, strings.ReplaceAll(httpBlock, "{{PREFIX}}", prefix), tune.Workers, tune.Connections, tune.LogLevel)
	return NginxConf(t, prefix, conf)
}

// NginxConf starts nginx with a complete configuration file text in the
// given prefix directory (which must exist). conf must contain
// `daemon off;` and should log to stderr or under the prefix.
func NginxConf(t testing.TB, prefix, conf string) *NginxServer {
	t.Helper()
	SkipShort(t, "a test with a real nginx")
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if _, e := os.Stat("/usr/sbin/nginx"); e == nil {
			bin, err = "/usr/sbin/nginx", nil
		}
	}
	if err != nil {
		requireComponent(t, "nginx", err, "KISS_REQUIRE_NGINX")
	}
	for _, d := range []string{"conf", "logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := &NginxServer{Prefix: prefix, ConfFile: filepath.Join(prefix, "conf", "nginx.conf")}
	if err := os.WriteFile(s.ConfFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, m := range listenRe.FindAllStringSubmatch(conf, -1) {
		s.Listen = append(s.Listen, m[1])
	}
	if out, err := exec.Command(bin, "-t", "-e", "stderr", "-p", prefix, "-c", s.ConfFile).CombinedOutput(); err != nil {
		t.Fatalf("testenv: nginx -t: %v\n%s\nconfig:\n%s", err, out, conf)
	}
	s.Proc = StartProcess(t, "nginx", exec.Command(bin, "-e", "stderr", "-p", prefix, "-c", s.ConfFile))
	for _, addr := range s.Listen {
		if err := WaitTCP(addr, 10*time.Second); err != nil {
			t.Fatalf("testenv: nginx: %v", err)
		}
		if ok, werr := s.Proc.Exited(); ok {
			t.Fatalf("testenv: nginx exited: %v", werr)
		}
	}
	return s
}

// NginxStatic serves root over plain HTTP on a random 127.0.0.1 port, the
// way a flat-directory cache is deployed; with dav, PUT and DELETE are
// allowed too (what `nix copy --to http://…` needs). It returns the server
// and its base URL ("http://127.0.0.1:PORT").
func NginxStatic(t testing.TB, root string, dav bool) (*NginxServer, string) {
	t.Helper()
	port := FreePort(t)
	davConf := ""
	if dav {
		davConf = "dav_methods PUT DELETE;\n      create_full_put_path on;\n      dav_access user:rw group:r all:r;\n      client_max_body_size 4g;"
	}
	s := Nginx(t, fmt.Sprintf(`
  server {
    listen 127.0.0.1:%d;
    root %s;
    location / {
      %s
    }
  }`, port, root, davConf))
	return s, fmt.Sprintf("http://127.0.0.1:%d", port)
}

// NginxMTLS is the deployment the original kiss-cache uses: an HTTPS
// server on root requiring client certificates from pki's CA, where only
// the CNs in writers may PUT or DELETE (403 otherwise), plus — because Nix
// 2.8 cannot present client certificates — one plain-HTTP loopback sidecar
// per entry of sidecars (CN → port) that proxies to it with that CN's
// client certificate. It returns the server, the https base URL and the
// sidecar base URLs by CN.
func NginxMTLS(t testing.TB, pki *PKIEnv, root string, writers []string, sidecars []string) (*NginxServer, string, map[string]string) {
	t.Helper()
	port := FreePort(t)
	var mapLines, side strings.Builder
	for _, w := range writers {
		fmt.Fprintf(&mapLines, "    \"~(^|,)CN=%s(,|$)\" 1;\n", regexp.QuoteMeta(w))
	}
	urls := map[string]string{}
	for _, cn := range sidecars {
		c := pki.Client(cn)
		sp := FreePort(t)
		urls[cn] = fmt.Sprintf("http://127.0.0.1:%d", sp)
		fmt.Fprintf(&side, `
  server {
    listen 127.0.0.1:%d;
    location / {
      proxy_pass https://127.0.0.1:%d;
      proxy_ssl_certificate %s;
      proxy_ssl_certificate_key %s;
      proxy_ssl_trusted_certificate %s;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse off;
      proxy_request_buffering off;
      client_max_body_size 4g;
    }
  }`, sp, port, c.CertFile, c.KeyFile, pki.CAFile)
	}
	s := Nginx(t, fmt.Sprintf(`
  map $ssl_client_s_dn $is_writer {
    default 0;
%s  }
  map "$request_method:$is_writer" $deny_write {
    default 0;
    "~^(PUT|DELETE|MKCOL|COPY|MOVE):0$" 1;
  }
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    ssl_client_certificate %s;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_protocols TLSv1.2 TLSv1.3;
    root %s;
    client_max_body_size 4g;
    location / {
      if ($deny_write) { return 403; }
      dav_methods PUT DELETE;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
    }
  }%s`, mapLines.String(), port, pki.Server.CertFile, pki.Server.KeyFile, pki.CAFile, root, side.String()))
	return s, fmt.Sprintf("https://127.0.0.1:%d", port), urls
}
