# VM test: pull-based deployment. The builder's kiss-publish builds a flake
# output and publishes it to gcroots/target through the nginx backend with
# its writer certificate; the target's kiss-update reads the marker through
# a local mTLS sidecar (for a Nix without client certificates), realises the
# published "system" from the cache and runs its switch-to-configuration.
{ self, pkgs }:
let
  pki = import ./pki.nix { inherit pkgs; };
  common = import ./common.nix { inherit self pkgs pki; };
  busybox = "${pkgs.busybox}/bin/busybox";
  # A stand-in system: switch-to-configuration records its call.
  flake = pkgs.writeTextDir "flake.nix" ''
    {
      outputs = { self }: {
        packages.${pkgs.stdenv.hostPlatform.system}.default = derivation {
          name = "kiss-fake-system";
          system = "${pkgs.stdenv.hostPlatform.system}";
          builder = "${busybox}";
          args = [ "sh" "-c" "${busybox} mkdir -p $out/bin && printf '#!${busybox} sh\\n${busybox} touch /tmp/switched-$1\\n' >$out/bin/switch-to-configuration && ${busybox} chmod +x $out/bin/switch-to-configuration" ];
        };
      };
    }
  '';
in
{
  name = "kiss-publish-update";
  nodes.cache = { ... }: {
    imports = [ common ];
    services.kiss.serve = import ./mtls-serve.nix "nginx";
  };
  nodes.builder = { ... }: {
    imports = [ common ];
    # The stand-in system's builder is busybox, named in the flake's text (no
    # string context): outside the sandbox, and present in the store.
    nix.settings.sandbox = false;
    system.extraDependencies = [ pkgs.busybox ];
    services.kiss.publish = {
      enable = true;
      store = "https://cache";
      secretKeyFile = "/etc/kiss-test/signing-key";
      tlsCertificate = "/etc/kiss-test/builder-01.pem";
      tlsPrivateKey = "/etc/kiss-test/builder-01.key";
      tlsCACertificate = "/etc/kiss-test/ca.pem";
      # A writable copy (the test script makes it): Nix may write flake.lock.
      systems = [{ flakeRef = "path:/tmp/publish-flake#default"; marker = "target"; }];
    };
  };
  nodes.target = { ... }: {
    imports = [ common ];
    nix.settings.require-sigs = false; # the test's signing key is made at run time
    system.extraDependencies = [ pkgs.busybox ]; # the stand-in system's switch-to-configuration runs it
    services.kiss.update = {
      enable = true;
      cacheUrl = "http://127.0.0.1:8081";
      interval = "1h";
    };
    # The sidecar of docs/quickstart.md: plain HTTP on loopback, mTLS to the cache.
    services.nginx = {
      enable = true;
      appendHttpConfig = ''
        server {
          listen 127.0.0.1:8081;
          location / {
            proxy_pass https://cache;
            proxy_ssl_certificate /etc/kiss-test/reader.pem;
            proxy_ssl_certificate_key /etc/kiss-test/reader.key;
            proxy_ssl_trusted_certificate /etc/kiss-test/ca.pem;
            proxy_ssl_verify on;
            proxy_ssl_name cache;
          }
        }
      '';
    };
    # nginx reads the reader key (the test's keys are root's otherwise).
    environment.etc."kiss-test/reader.key".user = "nginx";
  };
  testScript = ''
    start_all()
    cache.wait_for_unit("nginx.service")
    cache.wait_for_open_port(443)
    builder.wait_for_unit("multi-user.target")
    builder.succeed("nix key generate-secret --key-name cache-1 >/etc/kiss-test/signing-key")
    builder.succeed("cp -r ${flake} /tmp/publish-flake && chmod -R u+w /tmp/publish-flake")

    with subtest("kiss-publish builds and publishes gcroots/target"):
        builder.succeed("kiss-publish target")
        path = cache.succeed("cat /var/lib/nix-cache/gcroots/target").strip()
        assert path.startswith("/nix/store/") and path.endswith("-kiss-fake-system"), path
        cache.succeed(f"test -f /var/lib/nix-cache/{path.removeprefix('/nix/store/')[:32]}.narinfo")
        builder.fail("kiss-publish nonexistent")
        # The original's CLI name is not installed unless its options are used.
        builder.fail("command -v kiss-cache-publish")

    with subtest("kiss-update realises the published system and switches to it"):
        target.wait_for_unit("nginx.service")
        target.fail("kiss-update")  # an action is required
        target.succeed("kiss-update switch")
        target.succeed(f"test -e {path}")
        target.succeed("test -e /tmp/switched-switch")
        target.succeed(f"readlink /nix/var/nix/profiles/system | xargs readlink -f | grep -Fx {path}")
  '';
}
