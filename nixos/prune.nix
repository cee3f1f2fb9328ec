# services.kiss.prune: `kiss prune` on a timer, for a file:// directory or an
# s3:// bucket. Replaces the original services.kiss-cache (kiss-cache.service):
# roots are the store's own gcroots/ markers (no gcRoots wiring between
# modules), and marker expiry is the pruner's --root-max-age instead of
# systemd-tmpfiles, so it works on S3 too.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss.prune;
  kiss = config.services.kiss;
  kissLib = import ./lib.nix { inherit lib; };
  inherit (lib) mkOption types;

  store = kissLib.storeOf "services.kiss.prune" cfg;
  dir = kissLib.dirOf' cfg;

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
  options.services.kiss.prune = kissLib.storeOptions {
    store = "Store URL to prune (file:///dir or s3://bucket?…). S3 credentials come from environmentFile or the instance role.";
    cacheDir = "Shorthand for store = \"file://<cacheDir>\" (the original kiss-cache option).";
  } // {
    enable = lib.mkEnableOption "the kiss binary cache pruner (kiss-prune.service and .timer)";
    roots = mkOption { example = [ "releases/" "/var/lib/nix-cache-roots" ];
      type = types.listOf types.str;
      default = [ ];
      description = "Extra --roots (key prefixes or directories of markers); kiss always reads the store's gcroots/.";
    };
    schedule = mkOption { example = "daily";
      type = types.str;
      default = "weekly";
      description = "systemd OnCalendar expression.";
    };
    randomizedDelaySec = mkOption {
      type = types.str;
      example = "30min";
      default = "1h";
      description = "systemd RandomizedDelaySec for the timer.";
    };
    persistent = mkOption { example = false;
      type = types.bool;
      default = true;
      description = "Run a missed prune at boot (systemd Persistent=).";
    };
    dryRun = mkOption { example = true;
      type = types.bool;
      default = false;
      description = "Only report what would be deleted (--dry-run).";
    };
    lockWait = mkOption {
      type = kissLib.types.duration;
      default = "10m";
      example = "30m";
      description = "How long to wait for in-flight uploads (--lock-wait). The original's lockWait was seconds: 600 is \"600s\" or \"10m\".";
    };
    grace = mkOption {
      type = types.nullOr kissLib.types.duration;
      default = null;
      example = "2h";
      description = "Keep objects younger than this on the store's clock (--grace); null: kiss's default.";
    };
    rootMaxAge = mkOption {
      type = types.nullOr kissLib.types.age;
      default = null;
      example = "30d";
      description = ''
        Markers older than this no longer count as roots (--root-max-age).
        Replaces the original serve.gcRootMaxAge (systemd-tmpfiles), and
        works on S3. null: markers never expire.
      '';
    };
    metricsFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/prometheus-node-exporter-text/kiss_prune.prom";
      apply = kissLib.pathString;
      description = ''
        Write Prometheus metrics of each run to this file (--metrics-file),
        for node_exporter's textfile collector. Its directory is made
        writable for the unit.
      '';
    };
    environmentFile = mkOption {
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      example = "/run/secrets/kiss-prune.env";
      description = "systemd EnvironmentFile, e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for s3://.";
    };
    user = mkOption { example = "kiss";
      type = types.str;
      default = "root";
      description = ''
        User the pruner runs as. Root (the default, as in the original) can
        delete files written by nginx; use services.kiss.user when kiss serve
        owns the directory.
      '';
    };
    extraArgs = mkOption { example = [ "--json" "--concurrency" "16" ];
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
      documentation = [ kissLib.docUrl ];
      # The original kiss-cache's unit name keeps working (systemctl start kiss-cache).
      aliases = [ "kiss-cache.service" ];
      after = [ "network-online.target" "nix-gc.service" ];
      wants = [ "network-online.target" ];
      # Not restarted by a switch: a prune in progress finishes.
      restartIfChanged = false;
      serviceConfig = kissLib.hardening // {
        Type = "oneshot";
        ExecStart = kissLib.execLine ([ (lib.getExe kiss.package) ] ++ args);
        User = cfg.user;
        TimeoutStartSec = "infinity";
        ReadWritePaths = lib.optional (dir != null) dir
          ++ lib.optional (metricsDir != null) metricsDir;
      } // lib.optionalAttrs (cfg.environmentFile != null) {
        EnvironmentFile = cfg.environmentFile;
      };
    };

    systemd.timers.kiss-prune = {
      description = "Prune the kiss Nix binary cache periodically";
      aliases = [ "kiss-cache.timer" ];
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.schedule;
        Persistent = cfg.persistent;
        RandomizedDelaySec = cfg.randomizedDelaySec;
      };
    };

    # Owned by the pruner's user: kiss writes the metrics file atomically (a
    # temporary file beside it, renamed), and a prune whose metrics cannot be
    # written fails.
    systemd.tmpfiles.rules = lib.optional (metricsDir != null)
      "d ${metricsDir} 0755 ${cfg.user} ${if cfg.user == "root" then "root" else if cfg.user == kiss.user then kiss.group else "-"} -";

    services.kiss.userNeededBy = lib.optional (cfg.user == kiss.user) "services.kiss.prune";
  };
}
