{
  description = "kiss: a self-hosted Nix binary cache toolkit (pruner, GC-root registry, lease locks, gateway) over file:// or s3://";

  # flake.lock is not committed: it cannot be created offline where kiss is
  # developed. The first `nix build`/`nix flake check` (or `nix flake lock`)
  # on a machine with network access resolves nixpkgs to the current commit
  # of nixos-unstable and writes flake.lock (docs/nixos.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # A module that makes the flake's package the default.
      withPackage = module: { pkgs, lib, ... }: {
        imports = [ module ];
        services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
      };

      # NixOS VM tests (Linux only); each file is a runNixOSTest module.
      vmTests = pkgs: lib.mapAttrs'
        (name: file: lib.nameValuePair "vm-${name}" (pkgs.testers.runNixOSTest (import file { inherit self pkgs; })))
        {
          prune = ./nixos/tests/vm/prune.nix;
          nginx-mtls = ./nixos/tests/vm/nginx-mtls.nix;
          gateway = ./nixos/tests/vm/gateway.nix;
          publish-update = ./nixos/tests/vm/publish-update.nix;
          tor = ./nixos/tests/vm/tor.nix;
        };
    in
    {
      packages = forAllSystems (pkgs: rec {
        kiss = pkgs.callPackage ./package.nix { };
        default = kiss;
      });

      # nix run .# -- with-lock MARKER STORE-PATH -- nix copy --to "$KISS_STORE" STORE-PATH
      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.kiss}/bin/kiss";
          meta.description = "kiss: prune, roots, with-lock, serve, storage check";
        };
      });

      # pkgs.kiss for a host's own nixpkgs.
      overlays.default = final: _prev: { kiss = final.callPackage ./package.nix { }; };

      # nixosModules.default has everything, the original kiss-cache's option
      # names included; each other module can be used alone.
      nixosModules = {
        default = withPackage ./nixos/default.nix;
        kiss = self.nixosModules.default;
        prune = withPackage { imports = [ ./nixos/common.nix ./nixos/prune.nix ]; };
        serve = withPackage { imports = [ ./nixos/common.nix ./nixos/serve.nix ]; };
        publish = withPackage { imports = [ ./nixos/common.nix ./nixos/publish.nix ]; };
        update = withPackage { imports = [ ./nixos/common.nix ./nixos/update.nix ]; };
      };

      # Pure-builtins nginx config renderer (the "nginx" serve backend), for
      # use outside NixOS: (kiss.lib.renderNginx { cacheDir = …; … }).httpConfig
      lib.renderNginx = import ./nixos/nginx-render.nix;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            go_1_26
            gopls
            nix
            nginx
            openssl
            curl
            spin
            tor
            tflint
            opentofu
          ];
          shellHook = ''
            export AWS_EC2_METADATA_DISABLED=true
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);

      checks = forAllSystems (pkgs:
        let system = pkgs.stdenv.hostPlatform.system; in
        {
          # Builds the binary: fails when vendorHash is stale.
          kiss = self.packages.${system}.kiss;

          # The module harness the Go tests use, run by Nix itself with
          # nixpkgs' lib: a typical host evaluates without failed assertions.
          nixos-modules-eval =
            let
              r = import ./nixos/tests/eval.nix {
                inherit lib;
                configuration = import ./nixos/tests/hosts/cache.nix;
              };
            in
            if r.failedAssertions != [ ] then throw "kiss modules: ${builtins.toJSON r.failedAssertions}"
            else pkgs.writeText "kiss-nixos-modules-eval.json" (builtins.toJSON r.config);

          # The rendered nginx config passes `nginx -t` with nixpkgs' nginx.
          nginx-config = pkgs.runCommand "kiss-nginx-config-check" { nativeBuildInputs = [ pkgs.nginx pkgs.openssl ]; } ''
            mkdir -p cache/.tmp logs
            openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
              -subj /CN=localhost -keyout key.pem -out cert.pem 2>/dev/null
            cat >nginx.conf <<'EOF'
            daemon off;
            pid @DIR@/nginx.pid;
            error_log stderr;
            events { }
            http {
            ${(import ./nixos/nginx-render.nix {
              listen = [ "127.0.0.1:8443" ];
              cacheDir = "@CACHE@";
              sslCertificate = "@DIR@/cert.pem";
              sslCertificateKey = "@DIR@/key.pem";
              clientCA = "@DIR@/cert.pem";
              writers = [ "CN=writer" ];
              # An IP literal: the sandbox has no DNS, and without resolvers
              # nginx resolves the upstream while loading the config.
              fallbackCache = "http://127.0.0.1:1";
            }).httpConfig}
            }
            EOF
            sed -i "s|@CACHE@|$PWD/cache|g; s|@DIR@|$PWD|g" nginx.conf
            nginx -t -p "$PWD" -c "$PWD/nginx.conf" -e stderr
            touch $out
          '';
        } // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux (vmTests pkgs));
    };
}
