# Drop-in for the original kiss-cache's NixOS options: every option of its
# modules (services.kiss-cache and .serve, .serve-oidc, .serve-tor, .publish,
# .publish-tor, .update, .update-tor; also the earlier spelling
# services.kiss-cache-serve, -update, …) is accepted under its old name and
# forwarded to services.kiss.*, with a warning that names the new option, or
# refused with a message that says what to do instead. Unit names stay
# (kiss-cache.service/.timer, kiss-cache-publish, kiss-cache-update are
# aliases of kiss-prune, kiss-publish, kiss-update), and so do the CLIs
# kiss-cache-publish and kiss-cache-update.
{ config, lib, options, pkgs, ... }:
let
  inherit (lib) mkRenamedOptionModule mkRemovedOptionModule mkChangedOptionModule mkIf mkMerge mkDefault mkOption types;

  kissLib = import ./lib.nix { inherit lib; };

  # Both spellings of an original submodule's prefix.
  prefixes = sub: [ [ "services" "kiss-cache" sub ] [ "services" "kiss-cache-${sub}" ] ];
  renames = sub: to: names: lib.concatMap
    (p: map (n: mkRenamedOptionModule (p ++ [ n ]) (to ++ [ n ])) names)
    (prefixes sub);
  renameAs = sub: from: to: map (p: mkRenamedOptionModule (p ++ [ from ]) to) (prefixes sub);

  # systemd-tmpfiles ages (the original's gcRootMaxAge) as kiss ages; null
  # (the original's default, markers kept forever) stays null.
  tmpfilesAge = v:
    let m = builtins.match "([0-9]+)(s|m|min|h|d|w)" v; in
    if v == null then null
    else if m == null then throw "services.kiss-cache.serve.gcRootMaxAge = \"${v}\": kiss expires markers itself (services.kiss.prune.rootMaxAge, e.g. \"30d\", \"2w\", \"36h\"); set that instead."
    else "${lib.elemAt m 0}${if lib.elem (lib.elemAt m 1) [ "m" "min" ] then "m" else lib.elemAt m 1}";

  oldOidc = config.services.kiss-cache.serve-oidc;
  oidcDefined = options.services.kiss-cache.serve-oidc.enable.isDefined && oldOidc.enable;

  isUsed = path: (lib.getAttrFromPath path options).isDefined;
  usedAny = sub: lib.any (p: isUsed (p ++ [ "enable" ])) (prefixes sub);
  alias = name: target: pkgs.writeShellScriptBin name ''exec ${target} "$@"'';
in
{
  imports =
    # The pruner: services.kiss-cache.*
    map (n: mkRenamedOptionModule [ "services" "kiss-cache" n ] [ "services" "kiss" "prune" n ]) [ "enable" "cacheDir" "schedule" "dryRun" ]
    ++ [
      (mkChangedOptionModule [ "services" "kiss-cache" "lockWait" ] [ "services" "kiss" "prune" "lockWait" ]
        (config: "${toString config.services.kiss-cache.lockWait}s"))
      (mkChangedOptionModule [ "services" "kiss-cache" "gcRoots" ] [ "services" "kiss" "prune" "roots" ]
        # kiss always reads the store's own gcroots/: only other directories stay.
        # The original's gcRoots were paths: literals become strings, not store copies.
        (config: lib.filter (r: r != "${toString config.services.kiss.prune.cacheDir}/gcroots") (map toString config.services.kiss-cache.gcRoots)))
      (mkRemovedOptionModule [ "services" "kiss-cache" "package" ]
        "kiss replaces the kiss-cache binary: leave services.kiss.package unset (the flake's kiss package) or set it to a kiss package.")
    ]

    # serve (nginx + mTLS): same names, nginx backend by default (below).
    ++ renames "serve" [ "services" "kiss" "serve" ]
      [ "enable" "cacheDir" "hostName" "sslCertificate" "sslCertificateKey" "priority" "clientCA" "writers" "fallbackCache" "openFirewall" ]
    ++ map (p: mkChangedOptionModule (p ++ [ "gcRootMaxAge" ]) [ "services" "kiss" "prune" "rootMaxAge" ]
      (config: tmpfilesAge (lib.getAttrFromPath (p ++ [ "gcRootMaxAge" ]) config))) (prefixes "serve")

    # serve-tor: services.kiss.serve.tor.
    ++ renames "serve-tor" [ "services" "kiss" "serve" "tor" ] [ "enable" "cacheDir" "priority" "readClients" "writeClients" ]

    # publish and publish-tor.
    ++ renames "publish" [ "services" "kiss" "publish" ]
      [ "enable" "cacheDir" "systems" "secretKeyFile" "tlsCertificate" "tlsPrivateKey" "tlsCACertificate" "schedule" ]
    ++ renameAs "publish" "cacheUrl" [ "services" "kiss" "publish" "store" ]
    ++ map (p: mkRemovedOptionModule (p ++ [ "package" ])
      "kiss-publish is generated from services.kiss.package: leave it unset or set services.kiss.package.") (prefixes "publish")
    ++ renames "publish-tor" [ "services" "kiss" "publish" "tor" ] [ "enable" "onion" "clientAuthFile" "socksPort" ]

    # update and update-tor.
    ++ renames "update" [ "services" "kiss" "update" ]
      [ "enable" "cacheUrl" "marker" "tlsCertificate" "tlsPrivateKey" "tlsCACertificate" "priority" "interval" "onBootChange" "kexec" ]
    ++ renames "update-tor" [ "services" "kiss" "update" "tor" ] [ "enable" "onion" "clientAuthFile" "socksPort" ]

    # serve-oidc under the earlier spelling: same as services.kiss-cache.serve-oidc.
    ++ map (n: mkRenamedOptionModule [ "services" "kiss-cache-serve-oidc" n ] [ "services" "kiss-cache" "serve-oidc" n ])
      [ "enable" "cacheDir" "hostName" "sslCertificate" "sslCertificateKey" "priority" "issuer" "jwksUrl" "audience" "readSubjects" "writeSubjects" "resolvers" ];

  # serve-oidc was its own nginx virtual host; in kiss it is the virtual host
  # "oidc": nginx terminates TLS beside the mTLS vhost (SNI) and a kiss serve
  # checks the tokens. Declared with the original's types and translated.
  options.services.kiss-cache.serve-oidc = {
    enable = mkOption { type = types.bool; default = false; visible = false; description = "Original kiss-cache option; see services.kiss.serve.virtualHosts.<name>.oidc."; };
    cacheDir = mkOption { type = types.path; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.cacheDir."; };
    hostName = mkOption { type = types.str; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.hostName."; };
    sslCertificate = mkOption { type = types.path; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.sslCertificate."; };
    sslCertificateKey = mkOption { type = kissLib.types.secretPath; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.sslCertificateKey."; };
    priority = mkOption { type = types.ints.unsigned; default = 30; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.priority."; };
    issuer = mkOption { type = types.str; default = "https://token.actions.githubusercontent.com"; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.oidc.issuer."; };
    jwksUrl = mkOption { type = types.str; default = "https://token.actions.githubusercontent.com/.well-known/jwks"; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.oidc.jwksUrl."; };
    audience = mkOption { type = types.str; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.oidc.audience."; };
    readSubjects = mkOption { type = types.listOf types.str; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.oidc.readSubjects."; };
    writeSubjects = mkOption { type = types.listOf types.str; visible = false; description = "Original option; services.kiss.serve.virtualHosts.oidc.oidc.writeSubjects."; };
    resolvers = mkOption { type = types.listOf types.str; default = [ ]; visible = false; description = "Original option, not needed: kiss resolves the JWKS URL with the system resolver."; };
  };

  config = mkMerge [
    # The original served with nginx: keep doing so (beside the host's other vhosts).
    (mkIf (usedAny "serve") { services.kiss.serve.backend = mkDefault "nginx"; })

    (mkIf oidcDefined {
      warnings = [
        ("services.kiss-cache.serve-oidc is now the virtual host services.kiss.serve.virtualHosts.oidc "
          + "(backend \"nginx\", oidc = { … }): nginx terminates TLS and kiss serve checks the tokens.")
      ] ++ lib.optional (options.services.kiss-cache.serve-oidc.resolvers.highestPrio < 1500)
        "services.kiss-cache.serve-oidc.resolvers has no effect: kiss fetches the JWKS with the system resolver; remove it.";
      services.kiss.serve.virtualHosts.oidc = {
        backend = "nginx";
        inherit (oldOidc) cacheDir hostName sslCertificate sslCertificateKey priority;
        oidc = { inherit (oldOidc) issuer jwksUrl audience readSubjects writeSubjects; };
      };
    })

    # The original's CLIs.
    (mkIf (usedAny "publish" && config.services.kiss.publish.enable) {
      environment.systemPackages = [ (alias "kiss-cache-publish" (lib.getExe config.services.kiss.publish.package)) ];
    })
    (mkIf (usedAny "update" && config.services.kiss.update.enable) {
      environment.systemPackages = [ (alias "kiss-cache-update" "kiss-update") ];
    })
  ];
}
