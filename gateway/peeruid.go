package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/vishvananda/netlink"
)

// sameUserListener accepts only loopback connections opened by a process of
// one user. An ephemeral endpoint's URL carries its token, and the command
// kiss with-lock runs passes that URL on its command line (nix copy --to
// "$KISS_STORE"), where every local user can read it; with this check the
// token alone lets no other user write.
type sameUserListener struct {
	net.Listener
	uid uint64
	log *slog.Logger
}

// errNoPeer: the kernel knows no socket at the connection's other end (it
// closed already, or is not on this host).
var errNoPeer = errors.New("no local socket is the other end")

// Accept returns the next connection whose peer is a socket of l.uid;
// others are closed, logged, and never served.
func (l *sameUserListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := loopbackPeerUID(c)
		if err == nil && uid == l.uid {
			return c, nil
		}
		l.log.Warn("ephemeral endpoint: connection from another user refused", "remote", c.RemoteAddr().String(), "uid", uid, "err", err)
		c.Close()
	}
}

// loopbackPeerUID asks the kernel (sock_diag, what ss(8) uses) who owns
// the socket at the other end of a loopback TCP connection: the one whose
// local address is c's remote one and whose remote address is c's local one.
func loopbackPeerUID(c net.Conn) (uint64, error) {
	local, ok1 := c.LocalAddr().(*net.TCPAddr)
	remote, ok2 := c.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("not a TCP connection: %s", c.RemoteAddr())
	}
	s, err := netlink.SocketGet(remote, local)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errNoPeer, err)
	}
	return uint64(s.UID), nil
}
