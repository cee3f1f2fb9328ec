# services.kiss.update: pull-based deployment. Poll gcroots/<marker> on the
# cache, realise the store path it names from the cache, and switch to it
# (or schedule a reboot when kernel/initrd/kernel-params changed). Port of
# the original kiss-cache-update; Nix signatures are the real protection
# (the marker only says which path to fetch).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss.update;
  kissLib = import ./lib.nix { inherit lib; };
  torLib = import ./tor-client.nix { inherit lib; };
  inherit (lib) mkOption types;

  curlTls =
    lib.optionals (cfg.tlsCertificate != null) [ "--cert" cfg.tlsCertificate "--key" cfg.tlsPrivateKey ]
    ++ lib.optionals (cfg.tlsCACertificate != null) [ "--cacert" cfg.tlsCACertificate ];

  # Nix >= 2.34 understands tls-certificate/tls-private-key store settings;
  # older Nix needs a local mTLS sidecar (docs/quickstart.md, "Nix older
  # than 2.34: a local mTLS sidecar").
  substituter = "${cfg.cacheUrl}?priority=${toString cfg.priority}"
    + lib.optionalString (cfg.tlsCertificate != null)
      "&tls-certificate=${cfg.tlsCertificate}&tls-private-key=${cfg.tlsPrivateKey}";

  script = pkgs.writeShellApplication {
    name = "kiss-update";
    runtimeInputs = [ pkgs.nix pkgs.curl pkgs.coreutils pkgs.gnugrep pkgs.systemd ]
      ++ lib.optional cfg.kexec pkgs.kexec-tools;
    text = ''
      # kiss-update <switch|reboot> [MARKER_URL]
      action=''${1:-}
      case "$action" in
        switch | reboot) ;;
        *)
          echo "usage: kiss-update <switch|reboot> [MARKER_URL]" >&2
          exit 2
          ;;
      esac
      marker_url=''${2:-${lib.escapeShellArg "${cfg.cacheUrl}/gcroots/${cfg.marker}"}}
      ${lib.optionalString (cfg.tlsCACertificate != null) "export NIX_SSL_CERT_FILE=${lib.escapeShellArg cfg.tlsCACertificate}"}

      # Capture first, then grep: no SIGPIPE under pipefail.
      content=$(curl --fail --silent --show-error --location ${lib.escapeShellArgs curlTls} "$marker_url" || true)
      target=$(printf '%s\n' "$content" | grep -m1 -E '^/nix/store/[0-9a-z]{32}-' || true)
      if [ -z "$target" ]; then
        echo "no system published at $marker_url"
        exit 0
      fi

      current=$(readlink /run/current-system || true)
      if [ "$current" = "$target" ]; then
        ${if cfg.kexec then "kexec --unload || true\n" else ""}shutdown -c 2>/dev/null || true
        exit 0
      fi

      echo "realising $target"
      nix-store --option narinfo-cache-negative-ttl 0 \
        --option extra-substituters ${lib.escapeShellArg substituter} \
        --realise "$target" >/dev/null
      nix-env --profile /nix/var/nix/profiles/system --set "$target"

      fingerprint() {
        realpath -m "$1/kernel" "$1/initrd"
        cat "$1/kernel-params" 2>/dev/null || true
      }
      if [ "$(fingerprint /run/booted-system)" != "$(fingerprint "$target")" ]; then
        if [ "$action" = reboot ]; then
          "$target/bin/switch-to-configuration" boot
          ${lib.optionalString cfg.kexec ''
          if ! systemd-detect-virt --quiet; then
            kexec --load "$target/kernel" --initrd="$target/initrd" --append="$(cat "$target/kernel-params") init=$target/init"
          fi
          ''}if [ ! -e /run/systemd/shutdown/scheduled ]; then
            shutdown -r "+$(shuf -i 5-60 -n 1)"
          fi
          exit 0
        fi
        echo "warning: $target needs a reboot; activating userspace only" >&2
        echo "warning: run 'switch-to-configuration boot' and reboot to apply fully" >&2
      else
        shutdown -c 2>/dev/null || true
      fi
      "$target/bin/switch-to-configuration" switch
    '';
  };
in
{
  options.services.kiss.update = {
    enable = lib.mkEnableOption "pull-based deployment from a kiss cache marker (kiss-update.service and .timer)";
    cacheUrl = mkOption {
      type = types.strMatching "https?://[^[:space:]]+";
      example = "https://cache.example.org";
      description = "HTTP(S) base URL of the cache (also used as the substituter).";
    };
    marker = mkOption { example = "web1-canary";
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Marker name under gcroots/ that names this host's system.";
    };
    tlsCertificate = mkOption { example = "/etc/ssl/reader.pem"; type = types.nullOr types.path; default = null; description = "Reader client certificate (mTLS)."; };
    tlsPrivateKey = mkOption { example = "/run/keys/reader.key"; type = types.nullOr kissLib.types.secretPath; default = null; description = "Reader client key (mTLS)."; };
    tlsCACertificate = mkOption { example = "/etc/nix-cache/ca.pem"; type = types.nullOr types.path; default = null; description = "CA of the cache's server certificate."; };
    priority = mkOption { example = 20;
      type = types.ints.unsigned;
      default = 10;
      description = "Substituter priority for the realise step.";
    };
    interval = mkOption { example = "15m";
      type = types.str;
      default = "5m";
      description = "Polling interval (OnBootSec and OnUnitInactiveSec).";
    };
    onBootChange = mkOption { example = "reboot";
      type = types.enum [ "switch" "reboot" ];
      default = "switch";
      description = "What to do when kernel, initrd or kernel parameters change.";
    };
    kexec = mkOption { example = true;
      type = types.bool;
      default = false;
      description = "With onBootChange = \"reboot\": load the new kernel with kexec (not in VMs).";
    };
    tor = torLib.options "follow a marker through a kiss cache's read onion";
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        { assertion = (cfg.tlsCertificate == null) == (cfg.tlsPrivateKey == null); message = "services.kiss.update: tlsCertificate and tlsPrivateKey go together."; }
      ];
      warnings = lib.optional (!(config.nix.settings.require-sigs or true))
        "services.kiss.update: nix.settings.require-sigs is false: a compromised cache could take over this host.";
      environment.systemPackages = [ script ];
      systemd.services.kiss-update = {
        description = "Switch to the system published in the kiss cache";
        documentation = [ kissLib.docUrl ];
        aliases = [ "kiss-cache-update.service" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        # Switching rewrites this very unit: never restart or stop it mid-run.
        restartIfChanged = false;
        unitConfig.X-StopOnRemoval = false;
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${lib.getExe script} ${cfg.onBootChange}";
          Restart = "on-failure";
          RestartSec = "30s";
        };
      };
      systemd.timers.kiss-update = {
        description = "Poll the kiss cache for a newly published system";
        aliases = [ "kiss-cache-update.timer" ];
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnBootSec = cfg.interval;
          OnUnitInactiveSec = cfg.interval;
        };
      };
    }
    (lib.mkIf cfg.tor.enable (torLib.config {
      what = "services.kiss.update";
      tor = cfg.tor;
      unit = "kiss-update";
      setUrl = url: { services.kiss.update.cacheUrl = lib.mkDefault url; };
    }))
  ]);
}
