# services.kiss.prune: `kiss prune` on a timer, for a file:// directory or an
# s3:// bucket. Replaces the original services.kiss-cache (kiss-cache.service):
# roots are the store's own gcroots/ markers (no gcRoots wiring between
# modules), and marker expiry is the pruner's --root-max-age instead of
# systemd-tmpfiles, so it works on S3 too.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss.prune;
  kiss = config.services.kiss;
  inherit (lib) mkOption types;

  store =
    if cfg.store != null then cfg.store
    else if cfg.cacheDir != null then "file://${cfg.cacheDir}"
    else throw "services.kiss.prune: set store or cacheDir";

  metricsDir = if cfg.metricsFile == null then null else dirOf cfg.metricsFile;

  # Flags first: kiss's CLI (urfave/cli) stops reading flags at the first
  # positional argument.
  args = [ "prune" ]
    ++ lib.concatMap (r: [ "--roots" r ]) cfg.roots
    ++ lib.optional cfg.dryRun "--dry-run"
    ++ [ "--lock-wait" cfg.lockWait ]
    ++ lib.optionals (cfg.grace != null) [ "--grace" cfg.grace ]
    ++ lib.optionals (cfg.rootMaxAge != null) [ "--root-max-age" cfg.rootMaxAge ]
    ++ lib.optionals (cfg.metricsFile != null) [ "--metrics-file" cfg.metricsFile ]
    ++ cfg.extraArgs
    ++ [ store ];
in
{
  options.services.kiss.prune = {
    enable = lib.mkEnableOption "the kiss binary cache pruner (kiss-prune.service and .timer)";
    store = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "s3://nix-cache?region=eu-central-1";
      description = ''
        Store URL to prune (file:///dir or s3://bucket?…). S3 credentials come
        from environmentFile or the instance role.
      '';
    };
    cacheDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/nix-cache";
      description = "Shorthand for store = \"file://<cacheDir>\" (the original kiss-cache option).";
    };
    roots = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra --roots (key prefixes or directories of markers); kiss always reads the store's gcroots/.";
    };
    schedule = mkOption {
      type = types.str;
      default = "weekly";
      description = "systemd OnCalendar expression.";
    };
    randomizedDelaySec = mkOption {
      type = types.str;
      default = "1h";
      description = "systemd RandomizedDelaySec for the timer.";
    };
    persistent = mkOption {
      type = types.bool;
      default = true;
      description = "Run a missed prune at boot (systemd Persistent=).";
    };
    dryRun = mkOption {
      type = types.bool;
      default = false;
      description = "Only report what would be deleted (--dry-run).";
    };
    lockWait = mkOption {
      type = types.str;
      default = "10m";
      description = "How long to wait for in-flight uploads (--lock-wait, a Go duration).";
    };
    grace = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "2h";
      description = "Keep objects younger than this on the store's clock (--grace); null: kiss's default.";
    };
    rootMaxAge = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "30d";
      description = ''
        Markers older than this no longer count as roots (--root-max-age).
        Replaces the original serve.gcRootMaxAge (systemd-tmpfiles), and
        works on S3. null: markers never expire.
      '';
    };
    metricsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text/kiss_prune.prom";
      description = ''
        Write Prometheus metrics of each run to this file (--metrics-file),
        for node_exporter's textfile collector. Its directory is made
        writable for the unit.
      '';
    };
    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/kiss-prune.env";
      description = "systemd EnvironmentFile, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3://.";
    };
    user = mkOption {
      type = types.str;
      default = "root";
      description = ''
        User the pruner runs as. Root (the default, as in the original) can
        delete files written by nginx; use services.kiss.user when kiss serve
        owns the directory.
      '';
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Further arguments to kiss prune.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.store == null) != (cfg.cacheDir == null);
        message = "services.kiss.prune: set exactly one of store and cacheDir.";
      }
    ];

    systemd.services.kiss-prune = {
      description = "Prune the kiss Nix binary cache";
      documentation = [ "https://github.com/kiss-cache/kiss/blob/main/docs/nixos.md" ];
      after = [ "network-online.target" "nix-gc.service" ];
      wants = [ "network-online.target" ];
      # Not restarted by a switch: a prune in progress finishes.
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = lib.escapeShellArgs ([ (lib.getExe kiss.package) ] ++ args);
        User = cfg.user;
        TimeoutStartSec = "infinity";
        ReadWritePaths = lib.optional (cfg.cacheDir != null) cfg.cacheDir
          ++ lib.optional (cfg.cacheDir == null && lib.hasPrefix "file://" store) (lib.removePrefix "file://" store)
          ++ lib.optional (metricsDir != null) metricsDir;
      } // import ./hardening.nix // lib.optionalAttrs (cfg.environmentFile != null) {
        EnvironmentFile = cfg.environmentFile;
      };
    };

    systemd.timers.kiss-prune = {
      description = "Prune the kiss Nix binary cache periodically";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        Persistent = cfg.persistent;
        RandomizedDelaySec = cfg.randomizedDelaySec;
      };
    };

    systemd.tmpfiles.rules = lib.optional (metricsDir != null) "d ${metricsDir} 0755 root root -";
  };
}
