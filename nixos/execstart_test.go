package nixos_test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// splitExecStart splits an ExecStart= line the way systemd does
// (systemd.service(5), "Command lines"): words separated by whitespace,
// single or double quotes, C escapes (\\, \", \n, \xNN, …) undone inside
// and outside quotes; then, per word, specifiers ("%%" is "%", "%d" the
// credential directory credDir, any other specifier an error here) and
// "$$" for "$" (a lone "$" would be a variable reference: an error here).
func splitExecStart(line, credDir string) ([]string, error) {
	var words []string
	i := 0
	for {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		if i >= len(line) {
			break
		}
		var b strings.Builder
		var quote byte
		for ; i < len(line); i++ {
			c := line[i]
			switch {
			case quote == 0 && (c == ' ' || c == '\t'):
				goto word
			case quote == 0 && (c == '"' || c == '\''):
				quote = c
			case quote != 0 && c == quote:
				quote = 0
			case c == '\\':
				r, n, err := cUnescape(line[i+1:])
				if err != nil {
					return nil, fmt.Errorf("ExecStart %q: %w", line, err)
				}
				b.WriteString(r)
				i += n
			default:
				b.WriteByte(c)
			}
		}
		if quote != 0 {
			return nil, fmt.Errorf("ExecStart %q: unterminated quote", line)
		}
	word:
		w, err := resolveWord(b.String(), credDir)
		if err != nil {
			return nil, fmt.Errorf("ExecStart %q: %w", line, err)
		}
		words = append(words, w)
	}
	return words, nil
}

// cUnescape undoes one C escape at the start of s (after the backslash):
// the text it stands for and how many bytes of s it used.
func cUnescape(s string) (string, int, error) {
	if s == "" {
		return "", 0, fmt.Errorf("trailing backslash")
	}
	switch s[0] {
	case '\\', '"', '\'', ' ':
		return s[:1], 1, nil
	case 'n':
		return "\n", 1, nil
	case 't':
		return "\t", 1, nil
	case 'r':
		return "\r", 1, nil
	case 'x':
		if len(s) >= 3 {
			if v, err := strconv.ParseUint(s[1:3], 16, 8); err == nil {
				return string([]byte{byte(v)}), 3, nil
			}
		}
	case 'u':
		if len(s) >= 5 {
			if v, err := strconv.ParseUint(s[1:5], 16, 32); err == nil {
				return string(rune(v)), 5, nil
			}
		}
	}
	return "", 0, fmt.Errorf("invalid escape \\%c (systemd refuses the line)", s[0])
}

func resolveWord(w, credDir string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		switch c := w[i]; {
		case c == '%' && i+1 < len(w) && w[i+1] == '%':
			b.WriteByte('%')
			i++
		case c == '%' && i+1 < len(w) && w[i+1] == 'd':
			if credDir == "" {
				return "", fmt.Errorf("%%d used, but no credentials")
			}
			b.WriteString(credDir)
			i++
		case c == '%':
			return "", fmt.Errorf("unexpected specifier in %q", w)
		case c == '$' && i+1 < len(w) && w[i+1] == '$':
			b.WriteByte('$')
			i++
		case c == '$':
			return "", fmt.Errorf("variable reference in %q", w)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// execStart turns a unit's ExecStart into a command running the real kiss
// binary: the argument vector systemd would run, with the stub package's
// kiss replaced by kiss and %d (the credential directory) by credDir.
func execStart(t *testing.T, line, kiss, credDir string) *exec.Cmd {
	t.Helper()
	argv, err := splitExecStart(line, credDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(argv) == 0 || argv[0] != kissExe {
		t.Fatalf("ExecStart does not start with the kiss package: %q", line)
	}
	return exec.Command(kiss, argv[1:]...)
}

func TestSplitExecStart(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
	}{
		{`/bin/kiss serve --tls-key %d/tls-key`, []string{"/bin/kiss", "serve", "--tls-key", "/creds/tls-key"}},
		{`/bin/kiss "CN=ci\\,runner" "100%%" "a$$b" 'x y'`, []string{"/bin/kiss", `CN=ci\,runner`, "100%", "a$b", "x y"}},
		{`/bin/kiss "repo:example/*" "\u00e4"`, []string{"/bin/kiss", "repo:example/*", "ä"}},
	} {
		got, err := splitExecStart(c.line, "/creds")
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") {
			t.Errorf("%s: %q %v, want %q", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{`/bin/kiss "CN=ci\,runner"`, `/bin/kiss 100%`, `/bin/kiss $HOME`, `/bin/kiss "open`} {
		if got, err := splitExecStart(bad, "/creds"); err == nil {
			t.Errorf("%s: accepted as %q", bad, got)
		}
	}
}
