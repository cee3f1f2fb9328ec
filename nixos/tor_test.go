package nixos_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiss-cache/kiss/internal/testenv"
)

// The private key matching the public key
// descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ in
// nixos/tests/hosts/cache.nix (made with openssl genpkey -algorithm x25519).
const torClientPrivateKey = "descriptor:x25519:YAZK64QN4MALHXS36ESQNK44KE6NENXALPCENQNTSZIN4IG4HRFA"

// torFiles lays out what NixOS's tor service would have on disk for the
// evaluated host — the torrc and the files its ExecStartPre writes — under
// root, with every absolute path of the tor setup moved there, and with
// the network off and a free SOCKS port. keys maps the host's key files
// to their content.
func torFiles(t *testing.T, r *evalResult, root string, keys map[string]string) string {
	t.Helper()
	move := strings.NewReplacer("/var/lib/tor", root+"/var/lib/tor", "/run/tor", root+"/run/tor", "/run/kiss-tor", root+"/run/kiss-tor",
		":9050 ", fmt.Sprintf(":%d ", testenv.FreePort(t)))
	torrc := move.Replace(get(t, r.Config, "tor", "torrc").(string)) + "DisableNetwork 1\nLog info stderr\n"
	for _, d := range []string{"var/lib/tor", "run/tor/ClientOnionAuthDir", "run/kiss-tor"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range get(t, r.Config, "tor").(map[string]any)["authorizedClients"].([]any) {
		write(move.Replace(get(t, a, "path").(string)), get(t, a, "content").(string))
	}
	for _, a := range get(t, r.Config, "tor").(map[string]any)["clientAuthorizations"].([]any) {
		key, ok := keys[get(t, a, "file").(string)]
		if !ok {
			t.Fatalf("no test key for %v", a)
		}
		write(move.Replace(get(t, a, "path").(string)), get(t, a, "prefix").(string)+key)
	}
	file := filepath.Join(root, "torrc")
	write(file, torrc)
	return file
}

// syncBuffer is a bytes.Buffer safe for a process writing while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func torBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"tor", "/usr/sbin/tor", "/usr/bin/tor"} {
		if b, err := exec.LookPath(p); err == nil {
			return b
		}
	}
	t.Fatal("tor (Debian package tor, installed by scripts/install-deps.sh) not found")
	return ""
}

// runTor starts the real tor on torrc with the network off, waits until
// its log shows want (or tor exits, or 20 s pass) and returns the log.
func runTor(t *testing.T, torrc string, want ...string) string {
	t.Helper()
	var log syncBuffer
	cmd := exec.Command(torBinary(t), "-f", torrc)
	cmd.Stdout, cmd.Stderr = &log, &log
	p := testenv.StartProcess(t, "tor", cmd)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if exited, _ := p.Exited(); exited {
			break
		}
		all := true
		for _, w := range want {
			all = all && strings.Contains(log.String(), w)
		}
		if all {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = p.Stop(5 * time.Second)
	return log.String()
}

// TestTorConfigWithRealTor renders the Tor setup the modules give the
// typical cache host (two onion services, client authorization) and a
// client (update and publish over Tor), and runs the real tor on it,
// offline: `tor --verify-config`, then tor itself with the network off,
// which creates the onion services (keys, hostname), loads the authorized
// clients' keys and the client's authorization keys, and complains about
// any it cannot parse. A broken key must be caught the same way.
func TestTorConfigWithRealTor(t *testing.T) {
	if testing.Short() {
		t.Skip("starts tor")
	}
	nix := testenv.Nix(t)

	t.Run("cache", func(t *testing.T) {
		r := mustEvalConfig(t, nix, hostConfig("cache"))
		torrc := get(t, r.Config, "tor", "torrc").(string)
		for _, line := range []string{"HiddenServiceDir /var/lib/tor/onion/kiss-read", "HiddenServicePort 80 unix:/run/kiss-tor/read.sock",
			"HiddenServiceDir /var/lib/tor/onion/kiss-write", "HiddenServicePort 80 unix:/run/kiss-tor/write.sock", "HiddenServiceVersion 3", "SOCKSPort 0"} {
			if !strings.Contains(torrc, line+"\n") {
				t.Errorf("torrc lacks %q:\n%s", line, torrc)
			}
		}
		root := t.TempDir()
		file := torFiles(t, r, root, nil)
		out, err := exec.Command(torBinary(t), "--verify-config", "-f", file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Configuration was valid") {
			t.Fatalf("tor --verify-config: %v\n%s", err, out)
		}
		log := runTor(t, file, "Bootstrapped 0%")
		for _, onion := range []string{"kiss-read", "kiss-write"} {
			host, err := os.ReadFile(filepath.Join(root, "var/lib/tor/onion", onion, "hostname"))
			if err != nil || !strings.HasSuffix(strings.TrimSpace(string(host)), ".onion") {
				t.Errorf("%s: no onion hostname (%v)\n%s", onion, err, log)
			}
		}
		if strings.Contains(log, "Client authorization") || strings.Contains(log, "[err]") {
			t.Errorf("tor complained:\n%s", log)
		}

		// The same with one key broken by hand: tor must say so.
		bad := t.TempDir()
		file = torFiles(t, r, bad, nil)
		if err := os.WriteFile(filepath.Join(bad, "var/lib/tor/onion/kiss-write/authorized_clients/0.auth"), []byte("descriptor:x25519:NOTAKEY\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if log := runTor(t, file, "Client authorization"); !strings.Contains(log, "Client authorization encoded base32 public key length is invalid") {
			t.Errorf("tor accepted a broken authorized client key:\n%s", log)
		}
	})

	t.Run("client", func(t *testing.T) {
		r := mustEvalConfig(t, nix, hostConfig("tor-client"))
		root := t.TempDir()
		file := torFiles(t, r, root, map[string]string{
			"/run/keys/onion-read-auth": torClientPrivateKey, "/run/keys/onion-write-auth": torClientPrivateKey,
		})
		out, err := exec.Command(torBinary(t), "--verify-config", "-f", file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Configuration was valid") {
			t.Fatalf("tor --verify-config: %v\n%s", err, out)
		}
		read := "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.0.auth_private"
		write := "3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.0.auth_private"
		log := runTor(t, file, "Loaded a client authorization key file "+read, "Loaded a client authorization key file "+write)
		for _, f := range []string{read, write} {
			if !strings.Contains(log, "Loaded a client authorization key file "+f) {
				t.Errorf("tor did not load %s:\n%s", f, log)
			}
		}
		for _, unit := range []string{"kiss-update.service", "kiss-publish.service"} {
			text := get(t, r.Config, "unitFiles", unit, "text").(string)
			if !strings.Contains(text, `Environment="ALL_PROXY=socks5h://127.0.0.1:9050"`) || !strings.Contains(text, `Environment="NO_PROXY=127.0.0.1,::1,localhost"`) ||
				!strings.Contains(text, "After=tor.service") {
				t.Errorf("%s lacks the SOCKS proxy or the ordering after tor:\n%s", unit, text)
			}
		}
		if s := r.Scripts["kiss-publish"]; !strings.Contains(s, "store=http://3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.onion") {
			t.Errorf("kiss-publish does not publish to the write onion:\n%s", s)
		}
		if s := r.Scripts["kiss-update"]; !strings.Contains(s, "http://2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion/gcroots/host1") {
			t.Errorf("kiss-update does not follow the read onion's marker")
		}
	})
}
