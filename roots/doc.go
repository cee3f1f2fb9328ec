// Package roots is the root registry of a binary cache: the markers under
// gcroots/ that keep store paths, and their closures, alive.
//
// It is the one place that says what a marker is, for the pruner that
// reads markers and for everyone who writes them (kiss roots add, kiss
// with-lock, the gateway's marker PUT): Put validates and writes, Load
// reads. A writer therefore cannot leave a marker the pruner would skip
// (a name under a dot segment, a body that names no store path), and the
// pruner cannot skip one without saying so:
//
//   - A regular object under gcroots/ (any depth, no segment starting with
//     '.') is a marker: one store path a line (nixcache.ParseMarker).
//   - On file://, a symbolic link under gcroots/ is a root too. A link whose
//     target is a store path ("/nix/store/<hash>-name", or a path below one)
//     roots that path, by name: the target need not exist on the cache host
//     (the format of Nix's own gcroots and of nix-cache-cut). Any other link
//     is followed to the one file it names, which is read like a marker (at
//     most nixcache.MaxMarkerSize bytes, only if it is a regular file):
//     nothing else is read, no directory is listed through a link, so a link
//     reaches only what the operator pointed it at.
//   - Anything else under gcroots/ that cannot be read as a root (a dangling
//     link, a link to a directory, a named pipe, a socket, a device) makes
//     Load fail with ErrUnavailable: the pruner refuses to delete anything.
//   - A marker that names no store path (0 bytes, only bytes that are not
//     UTF-8, only comments) is returned with its Problem set; the pruner
//     refuses to run while one exists unless told otherwise.
//
// S3 has no symbolic links: there, every marker is an object.
package roots
