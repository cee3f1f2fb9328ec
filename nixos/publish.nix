# services.kiss.publish: build NixOS systems (or any flake output) and push
# them under `kiss with-lock`, which takes a writer lease, runs `nix copy`
# and writes the gcroots/<marker> that both roots the closure and tells
# hosts running services.kiss.update what to switch to. Port of the
# original kiss-cache-publish.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss.publish;
  kiss = config.services.kiss;
  kissLib = import ./lib.nix { inherit lib; };
  torLib = import ./tor-client.nix { inherit lib; };
  inherit (lib) mkOption types;

  store = kissLib.storeOf "services.kiss.publish" cfg;

  # Arguments `kiss with-lock` gets for authentication (remote stores only).
  authArgs =
    lib.optionals (cfg.tlsCertificate != null) [ "--cert" cfg.tlsCertificate "--key" cfg.tlsPrivateKey ]
    ++ lib.optionals (cfg.tlsCACertificate != null) [ "--cacert" cfg.tlsCACertificate ];

  # The token goes to with-lock through $KISS_BEARER, not argv (visible in ps).
  bearerEnv = lib.optionalString (cfg.bearerTokenFile != null)
    "KISS_BEARER=$(cat ${lib.escapeShellArg cfg.bearerTokenFile})\nexport KISS_BEARER\n";

  copyParams = "compression=${cfg.compression}"
    + lib.optionalString (cfg.secretKeyFile != null) "&secret-key=${cfg.secretKeyFile}";

  nixCA = lib.optionalString (cfg.tlsCACertificate != null) "export NIX_SSL_CERT_FILE=${lib.escapeShellArg cfg.tlsCACertificate}\n";

  script = pkgs.writeShellApplication {
    name = "kiss-publish";
    runtimeInputs = [ kiss.package pkgs.nix pkgs.coreutils ];
    text = ''
      # kiss-publish [MARKER...]: build each configured system and publish it
      # to ${store} under gcroots/<MARKER>, inside `kiss with-lock`.
      store=${lib.escapeShellArg store}
      # gcroots/<marker> goes before a query string (s3://bucket?region=…).
      store_base=''${store%%\?*}
      store_query=''${store#"$store_base"}
      ${nixCA}${bearerEnv}
      # Run by `kiss with-lock` as its command: push one path to the store
      # endpoint with-lock hands over in $KISS_STORE.
      # A bare path would be a local (chroot) store to Nix: make it file://.
      if [ "''${1:-}" = __copy ]; then
        target=$KISS_STORE
        case "$target" in /*) target=file://$target ;; esac
        sep='?'
        case "$target" in *'?'*) sep='&' ;; esac
        exec nix --extra-experimental-features nix-command copy --to "$target$sep"${lib.escapeShellArg copyParams} "$2"
      fi

      # The configured systems, in configuration order.
      markers=(${lib.escapeShellArgs (map (s: s.marker) cfg.systems)})
      flakes=(${lib.escapeShellArgs (map (s: s.flakeRef) cfg.systems)})

      for want in "$@"; do
        found=0
        for m in "''${markers[@]}"; do [ "$m" = "$want" ] && found=1; done
        if [ "$found" != 1 ]; then
          echo "unknown marker: $want (configured: ''${markers[*]})" >&2
          exit 2
        fi
      done

      fail=0
      for i in "''${!markers[@]}"; do
        marker=''${markers[$i]}
        flake=''${flakes[$i]}
        if [ "$#" -gt 0 ]; then
          hit=0
          for want in "$@"; do [ "$want" = "$marker" ] && hit=1; done
          [ "$hit" = 1 ] || continue
        fi
        echo "building $flake" >&2
        if ! out=$(nix --extra-experimental-features 'nix-command flakes' build --no-link --print-out-paths "$flake"); then
          echo "build failed: $flake" >&2
          fail=1
          continue
        fi
        if [ "$(printf '%s\n' "$out" | wc -l)" != 1 ]; then
          echo "$flake has several outputs; publish one: $out" >&2
          fail=1
          continue
        fi
        echo "pushing $out to gcroots/$marker" >&2
        if ! kiss with-lock ${lib.escapeShellArgs authArgs} "$store_base/gcroots/$marker$store_query" "$out" -- "$0" __copy "$out"; then
          echo "publish failed: $marker" >&2
          fail=1
        fi
      done
      exit "$fail"
    '';
  };
in
{
  options.services.kiss.publish = kissLib.storeOptions {
    store = "Where to publish: a kiss serve or the nginx backend (https://…), an s3:// bucket, or a file:// directory. The original's cacheUrl.";
    cacheDir = "Local mode: publish into this directory (store = file://<cacheDir>).";
    storeExample = "https://cache.example.org";
  } // {
    enable = lib.mkEnableOption "publishing systems to a kiss cache (kiss-publish.service and .timer)";
    package = mkOption {
      type = types.package;
      default = script;
      defaultText = lib.literalExpression "the generated kiss-publish script";
      description = "The kiss-publish script (also installed into the system PATH).";
      readOnly = true;
    };
    systems = mkOption {
      default = [ ];
      description = "What to build and under which marker to publish it.";
      example = [{ flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; marker = "web1"; }];
      type = types.listOf (types.submodule {
        options = {
          flakeRef = mkOption { example = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; type = types.str; description = "Flake output to build (one output)."; };
          marker = mkOption { example = "web1"; type = types.str; description = "Marker name under gcroots/ (the target host's services.kiss.update.marker)."; };
        };
      });
    };
    compression = mkOption { example = "xz";
      type = types.enum [ "zstd" "xz" "none" ];
      default = "zstd";
      description = "NAR compression (zstd decompresses an order of magnitude faster than xz).";
    };
    secretKeyFile = mkOption { example = "/run/keys/cache-key";
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      description = "Nix signing key (nix-store --generate-binary-cache-key).";
    };
    tlsCertificate = mkOption { example = "/etc/ssl/builder-01.pem"; type = types.nullOr types.path; default = null; description = "Writer client certificate (mTLS)."; };
    tlsPrivateKey = mkOption { example = "/run/keys/builder-01.key"; type = types.nullOr kissLib.types.secretPath; default = null; description = "Writer client key (mTLS)."; };
    tlsCACertificate = mkOption { example = "/etc/nix-cache/ca.pem"; type = types.nullOr types.path; default = null; description = "CA of the cache's server certificate."; };
    bearerTokenFile = mkOption { example = "/run/secrets/cache-token";
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      description = "File holding a bearer token for an OIDC kiss serve.";
    };
    environmentFile = mkOption { example = "/run/secrets/kiss-s3.env";
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      description = "systemd EnvironmentFile (S3 credentials for s3:// stores).";
    };
    schedule = mkOption {
      type = types.str;
      default = "hourly";
      example = "*-*-* 02:00:00";
      description = "systemd OnCalendar expression.";
    };
    tor = torLib.options "publish to a kiss cache's write onion";
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        { assertion = (cfg.store == null) != (cfg.cacheDir == null); message = "services.kiss.publish: set exactly one of store and cacheDir."; }
        { assertion = (cfg.tlsCertificate == null) == (cfg.tlsPrivateKey == null); message = "services.kiss.publish: tlsCertificate and tlsPrivateKey go together."; }
        { assertion = cfg.systems != [ ]; message = "services.kiss.publish: systems is empty."; }
        { assertion = cfg.cacheDir == null || (cfg.tlsCertificate == null && cfg.tlsCACertificate == null && cfg.bearerTokenFile == null); message = "services.kiss.publish: TLS and bearer options make no sense in local mode."; }
        { assertion = lib.length (map (s: s.marker) cfg.systems) == lib.length (lib.unique (map (s: s.marker) cfg.systems)); message = "services.kiss.publish: two systems publish to the same marker."; }
      ];
      environment.systemPackages = [ script ];
      systemd.services.kiss-publish = {
        description = "Build and publish systems to the kiss cache";
        documentation = [ kissLib.docUrl ];
        # The original's unit name keeps working (systemctl start kiss-cache-publish).
        aliases = [ "kiss-cache-publish.service" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        before = lib.optional (cfg.cacheDir != null) "kiss-prune.service";
        restartIfChanged = false;
        path = [ pkgs.git ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = lib.getExe script;
          TimeoutStartSec = "infinity";
          Restart = "no";
        } // lib.optionalAttrs (cfg.environmentFile != null) {
          EnvironmentFile = cfg.environmentFile;
        };
      };
      systemd.timers.kiss-publish = {
        description = "Build and publish systems to the kiss cache periodically";
        aliases = [ "kiss-cache-publish.timer" ];
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.schedule;
          Persistent = true;
          RandomizedDelaySec = "5m";
        };
      };
    }
    (lib.mkIf cfg.tor.enable (torLib.config {
      what = "services.kiss.publish";
      tor = cfg.tor;
      unit = "kiss-publish";
      setUrl = url: { services.kiss.publish.store = lib.mkDefault url; };
    }))
  ]);
}
