# VM test: the nginx backend (the original kiss-cache deployment): nginx +
# mTLS + WebDAV on a directory, the lease gateway behind gcroots/, and a
# push with `kiss with-lock` from another host. The access model the
# original's VM test checked, plus: a certificate whose subject holds the
# writer's CN and another CN is not a writer (issue 11 item 4), in NixOS's
# own nginx.
{ self, pkgs }:
let
  pki = import ./pki.nix { inherit pkgs; };
  common = import ./common.nix { inherit self pkgs pki; };
in
{
  name = "kiss-nginx-mtls";
  nodes.cache = { ... }: {
    imports = [ common ];
    services.kiss.serve = import ./mtls-serve.nix "nginx";
    services.kiss.prune = { enable = true; cacheDir = "/var/lib/nix-cache"; grace = "0s"; lockWait = "0s"; };
  };
  nodes.builder = { ... }: { imports = [ common ]; };
  testScript = ''
    start_all()
    cache.wait_for_unit("nginx.service")
    cache.wait_for_open_port(443)
    builder.wait_for_unit("multi-user.target")

    def curl(cert, *args):
        c = "" if cert is None else f"--cert /etc/kiss-test/{cert}.pem --key /etc/kiss-test/{cert}.key"
        return builder.succeed(f"curl -s -o /dev/null -w '%{{http_code}}' {c} " + " ".join(args)).strip()

    with subtest("no client certificate: 400"):
        assert curl(None, "https://cache/nix-cache-info") == "400"
    with subtest("a reader reads, and cannot write"):
        assert curl("reader", "https://cache/nix-cache-info") == "200"
        assert curl("reader", "-X PUT --data x https://cache/nar/r.nar") == "403"
    with subtest("two CNs, one of them the writer's: not a writer"):
        assert curl("twocn", "-X PUT --data x https://cache/nar/t.nar") == "403"
        cache.fail("test -e /var/lib/nix-cache/nar/t.nar")
    with subtest("the writer pushes with kiss with-lock (through the lease gateway)"):
        builder.succeed("echo pushed >/tmp/pushed")
        path = builder.succeed("nix-store --add /tmp/pushed").strip()
        builder.succeed(
            "kiss with-lock --cert /etc/kiss-test/builder-01.pem --key /etc/kiss-test/builder-01.key"
            f" --cacert /etc/kiss-test/ca.pem https://cache/gcroots/web1 {path}"
            # Single quotes: $KISS_STORE is kiss's, set for the command.
            f" -- sh -c 'nix copy --to \"$KISS_STORE\" {path}'"
        )
        cache.succeed(f"grep -Fx {path} /var/lib/nix-cache/gcroots/web1")
        cache.succeed("test -z \"$(ls -A /var/lib/nix-cache/gcroots/.lock)\"")
    with subtest("cache objects cannot be deleted over HTTP, not even by the writer"):
        h = path.removeprefix("/nix/store/")[:32]
        assert curl("builder-01", f"-X DELETE https://cache/{h}.narinfo") == "405"
        cache.succeed(f"test -f /var/lib/nix-cache/{h}.narinfo")
    with subtest("prune keeps the pushed closure"):
        cache.succeed("systemctl start kiss-prune.service")
        cache.succeed(f"test -f /var/lib/nix-cache/{h}.narinfo")
  '';
}
