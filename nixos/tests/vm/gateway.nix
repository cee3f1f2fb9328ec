# VM test: the kiss backend. kiss serve is socket-activated on port 443
# (mTLS, the writer by CN) and, as a second virtual host, on a loopback
# port without TLS for local readers; the pruner on the same directory. A
# push with kiss with-lock from another host, a substitution with Nix, the
# pruner keeping what the marker roots.
{ self, pkgs }:
let
  pki = import ./pki.nix { inherit pkgs; };
  common = import ./common.nix { inherit self pkgs pki; };
in
{
  name = "kiss-gateway";
  nodes.cache = { ... }: {
    imports = [ common ];
    services.kiss.serve = import ./mtls-serve.nix "kiss" // {
      virtualHosts.local = {
        cacheDir = "/var/lib/nix-cache";
        listen = [ "127.0.0.1:8080" ];
        priority = 10;
      };
    };
    services.kiss.prune = { enable = true; cacheDir = "/var/lib/nix-cache"; grace = "0s"; lockWait = "0s"; user = "kiss"; };
  };
  nodes.builder = { ... }: { imports = [ common ]; };
  testScript = ''
    start_all()
    cache.wait_for_unit("kiss-serve.socket")
    cache.wait_for_unit("kiss-serve-local.socket")
    # Socket activation: nothing runs until the first connection.
    cache.fail("systemctl is-active kiss-serve.service")
    builder.wait_for_unit("multi-user.target")

    with subtest("mTLS: no certificate is refused, a reader reads"):
        builder.fail("curl -sf https://cache/nix-cache-info")
        builder.succeed("curl -sf --cert /etc/kiss-test/reader.pem --key /etc/kiss-test/reader.key https://cache/nix-cache-info | grep -F 'StoreDir: /nix/store'")
        cache.succeed("systemctl is-active kiss-serve.service")
    with subtest("the key stays root-only: kiss reads it through LoadCredential"):
        cache.succeed("stat -c %a /etc/kiss-test/cache.key | grep -Fx 600")
        cache.succeed("systemctl show -p User --value kiss-serve.service | grep -Fx kiss")

    with subtest("push with kiss with-lock, then substitute from the loopback vhost"):
        builder.succeed("echo pushed >/tmp/pushed")
        path = builder.succeed("nix-store --add /tmp/pushed").strip()
        builder.succeed("nix key generate-secret --key-name cache-1 >/tmp/sk && nix key convert-secret-to-public </tmp/sk >/tmp/pk")
        builder.succeed(
            "kiss with-lock --cert /etc/kiss-test/builder-01.pem --key /etc/kiss-test/builder-01.key"
            f" https://cache/gcroots/web1 {path}"
            # Single quotes: $KISS_STORE is kiss's, set for the command.
            f" -- sh -c 'nix copy --to \"$KISS_STORE?secret-key=/tmp/sk\" {path}'"
        )
        pk = builder.succeed("cat /tmp/pk").strip()
        cache.succeed(f"grep -Fx {path} /var/lib/nix-cache/gcroots/web1")
        cache.succeed(f"nix copy --from http://127.0.0.1:8080 --to /tmp/store --option trusted-public-keys '{pk}' {path}")
        cache.succeed("curl -sf http://127.0.0.1:8080/nix-cache-info | grep -F 'Priority: 10'")

    with subtest("a reader cannot write; the pruner keeps the pushed path"):
        builder.fail("curl -sf --cert /etc/kiss-test/reader.pem --key /etc/kiss-test/reader.key -X PUT --data x https://cache/gcroots/x")
        cache.succeed("systemctl start kiss-prune.service")
        cache.succeed(f"test -f /var/lib/nix-cache/{path.removeprefix('/nix/store/')[:32]}.narinfo")
  '';
}
