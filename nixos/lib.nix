# Helpers shared by kiss's NixOS modules: option types that reject at
# evaluation time what kiss would refuse at run time, the systemd hardening
# (as mkDefault, so a host's own setting wins), and store URL handling.
# Usage: kissLib = import ./lib.nix { inherit lib; };
{ lib }:
let
  inherit (lib) types mkOptionType;
  inherit (builtins) isString match substring;

  # kiss's duration syntax (internal/duration; TestDurationTypeAgreesWithCLI): numbers
  # with units, combined ("1d12h"); a bare number only as "0".
  durationRe = "0|(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|ms|s|m|h|d|w))+";
in
rec {
  types = {
    # A duration as kiss's flags take it ("10m", "1h30m", "30d", "0s").
    duration = mkOptionType {
      name = "duration";
      description = "duration (a number with a unit: ms, s, m, h, d, w, combined as in \"1d12h\"; a bare number is refused)";
      descriptionClass = "noun";
      check = x: isString x && match durationRe x != null;
      merge = lib.mergeEqualOption;
    };

    # A positive duration (--root-max-age).
    age = mkOptionType {
      name = "age";
      description = "positive duration (e.g. \"30d\", \"2w\", \"36h\")";
      descriptionClass = "noun";
      check = x: isString x && match durationRe x != null && match ".*[1-9].*" x != null;
      merge = lib.mergeEqualOption;
    };

    # A file that holds a secret: an absolute path outside the Nix store,
    # as a string. A path literal (./key.pem) would be copied into the
    # world-readable store, so it is refused.
    secretPath = mkOptionType {
      name = "secretPath";
      description = "absolute path outside the Nix store, as a string (secrets must not be path literals: those are copied into the world-readable store)";
      descriptionClass = "noun";
      check = x: isString x && substring 0 1 x == "/" && !(lib.hasPrefix builtins.storeDir x);
      merge = lib.mergeEqualOption;
    };

    # A store URL kiss opens (file:///dir, s3://bucket?…, https://gateway).
    storeUrl = lib.types.strMatching "(file://|s3://|https?://|mem://)[^[:space:]]+" // {
      description = "store URL (file:///dir, s3://bucket?…, or https:// for a kiss serve)";
    };
  };

  # systemd sandboxing shared by kiss's units (a static Go binary: no JIT,
  # no devices, no kernel tuning), every value mkDefault so a host can
  # loosen or tighten one (ProtectSystem = "full") without mkForce. Units add
  # ReadWritePaths for what they write.
  hardening = lib.mapAttrs (_: lib.mkDefault) (import ./hardening.nix);

  # The two ways a module names its store: a URL, or a directory.
  storeOptions = { store, cacheDir, storeExample ? "s3://nix-cache?region=eu-central-1" }: {
    store = lib.mkOption {
      type = lib.types.nullOr types.storeUrl;
      default = null;
      example = storeExample;
      description = store;
    };
    cacheDir = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/var/lib/nix-cache";
      description = cacheDir;
      apply = pathString;
    };
  };

  # A path option's value as a string. types.path takes a path literal
  # (cacheDir = /var/lib/nix-cache;) as well as a string, as the original
  # kiss-cache's options did; interpolated ("file://${dir}"), a literal is
  # copied into the Nix store, so the units would work on a read-only copy
  # of the directory made at evaluation time. toString does not copy.
  pathString = p: if p == null then null else toString p;

  # The store URL a module works on: store, or file://cacheDir.
  storeOf = what: cfg:
    if cfg.store != null then cfg.store
    else if cfg.cacheDir != null then "file://${cfg.cacheDir}"
    else throw "${what}: set store or cacheDir";

  # The local directory behind a store, or null (S3, gateways).
  dirOf' = cfg:
    if cfg.cacheDir != null then cfg.cacheDir
    else if cfg.store != null && lib.hasPrefix "file://" cfg.store then lib.removePrefix "file://" (lib.head (lib.splitString "?" cfg.store))
    else null;

  # An ExecStart= line from a list of arguments, quoted for systemd (as
  # NixOS's utils.escapeSystemdExecArgs): JSON double quotes (systemd undoes
  # C escapes, so a "\" in a DN survives), "%" and "$" doubled (systemd
  # would expand specifiers and variables). An argument { spec = "%d/x"; }
  # keeps its specifier (credentials: %d is the unit's credential directory).
  execLine = args: lib.concatMapStringsSep " " execArg args;
  execArg = arg:
    if builtins.isAttrs arg && arg ? spec then arg.spec
    else
      let s = toString arg; in
      if match "[[:alnum:],./:=@_+-]+" s != null then s
      else builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
  credential = name: { spec = "%d/${name}"; };

  docUrl = "https://github.com/kiss-cache/kiss/blob/main/docs/nixos.md";
}
