{
  description = "kiss: a self-hosted Nix binary cache toolkit (pruner, GC-root registry, lease locks, gateway) over file:// or s3://";

  # flake.lock is not committed: it cannot be created offline where kiss is
  # developed. Run `nix flake lock` once on a machine with network access
  # (docs/nixos.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        kiss = pkgs.callPackage ./package.nix { };
        default = kiss;
      });

      # nixosModules.default imports all of them; each one can be used alone.
      nixosModules = {
        default = { pkgs, lib, ... }: {
          imports = [ ./nixos/default.nix ];
          services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
        };
        kiss = self.nixosModules.default;
        prune = { pkgs, lib, ... }: {
          imports = [ ./nixos/common.nix ./nixos/prune.nix ];
          services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
        };
        serve = { pkgs, lib, ... }: {
          imports = [ ./nixos/common.nix ./nixos/serve.nix ];
          services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
        };
        publish = { pkgs, lib, ... }: {
          imports = [ ./nixos/common.nix ./nixos/publish.nix ];
          services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
        };
        update = { pkgs, lib, ... }: {
          imports = [ ./nixos/common.nix ./nixos/update.nix ];
          services.kiss.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;
        };
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
            tflint
            opentofu
          ];
          shellHook = ''
            export AWS_EC2_METADATA_DISABLED=true
          '';
        };
      });

      checks = forAllSystems (pkgs:
        {
          # Builds the binary (fails until package.nix has the real vendorHash).
          kiss = self.packages.${pkgs.stdenv.hostPlatform.system}.kiss;

          # The stub-lib evaluation the Go tests assert on, run by Nix itself:
          # a typical host's configuration must evaluate without failed assertions.
          nixos-stub-eval =
            let
              r = import ./nixos/tests/eval.nix {
                settings = {
                  prune = { enable = true; cacheDir = "/var/lib/nix-cache"; rootMaxAge = "30d"; };
                  serve = { enable = true; backend = "nginx"; cacheDir = "/var/lib/nix-cache"; hostName = "cache"; sslCertificate = "/c"; sslCertificateKey = "/k"; clientCA = "/ca"; writers = [ "CN=w" ]; };
                };
              };
            in
            if r.failedAssertions != [ ] then throw "kiss modules: ${builtins.toJSON r.failedAssertions}"
            else pkgs.runCommand "kiss-nixos-stub-eval" { } ''
              cp ${builtins.toFile "kiss-config.json" (builtins.toJSON r.config)} $out
            '';

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
        });
    };
}
