# services.kiss.serve: serve a cache over HTTPS with write access control.
#
# backend = "kiss"  (default): `kiss serve`, socket-activated, over any store
#   URL (file:// or s3://): mTLS writers by DN or OIDC bearer tokens, leases
#   with conditional writes, write validation, a fallback upstream.
# backend = "nginx": the original kiss-cache deployment, nginx + mTLS +
#   WebDAV on a flat directory, writers by subject DN as `kiss serve --writer`;
#   the config is rendered by ./nginx-render.nix (tested in a real nginx by
#   the test suite). gcroots/ goes to a kiss serve (the lease gateway) for
#   the lease protocol.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss.serve;
  kiss = config.services.kiss;
  inherit (lib) mkOption types;

  store =
    if cfg.store != null then cfg.store
    else if cfg.cacheDir != null then "file://${cfg.cacheDir}"
    else throw "services.kiss.serve: set store or cacheDir";

  cacheDir =
    if cfg.cacheDir != null then cfg.cacheDir
    else if lib.hasPrefix "file://" store then lib.removePrefix "file://" store
    else null;

  mtls = cfg.clientCA != null;

  # Credentials are handed to the unit with LoadCredential, so the key can
  # stay root-only (0600) and the service still runs unprivileged.
  cred = name: "%d/${name}";

  serveArgs = [ "serve" "--store" store ]
    ++ lib.optionals (!cfg.socketActivation) (lib.concatMap (l: [ "--listen" l ]) cfg.listen)
    ++ lib.optionals (cfg.sslCertificate != null) [ "--tls-cert" (cred "tls-cert") "--tls-key" (cred "tls-key") ]
    ++ lib.optionals mtls [ "--client-ca" (cred "client-ca") ]
    ++ lib.concatMap (w: [ "--writer" w ]) cfg.writers
    ++ lib.optionals (cfg.oidc != null) ([
      "--oidc-issuer" cfg.oidc.issuer
      "--oidc-audience" cfg.oidc.audience
      "--oidc-jwks-url" cfg.oidc.jwksUrl
    ]
    ++ lib.concatMap (s: [ "--oidc-read-subject" s ]) cfg.oidc.readSubjects
    ++ lib.concatMap (s: [ "--oidc-write-subject" s ]) cfg.oidc.writeSubjects)
    ++ lib.optionals (cfg.fallbackCache != null) [ "--upstream" cfg.fallbackCache ]
    ++ lib.optionals (cfg.redirectReads != "none") [ "--redirect-reads" cfg.redirectReads ]
    ++ [ "--priority" (toString cfg.priority) ]
    ++ cfg.extraArgs;

  leaseSocket = "/run/kiss/leases.sock";
  gcrootsProxy =
    if cfg.gcrootsProxy != null then cfg.gcrootsProxy
    else if cfg.leaseGateway then "http://unix:${leaseSocket}:"
    else null;

  hardening = import ./hardening.nix;

  rendered = import ./nginx-render.nix {
    name = "kiss";
    listen = cfg.listen;
    serverName = cfg.hostName;
    cacheDir = if cacheDir != null then cacheDir else throw "services.kiss.serve: the nginx backend needs a file:// store";
    inherit (cfg) sslCertificate sslCertificateKey clientCA writers priority fallbackCache resolvers;
    inherit gcrootsProxy;
    extraConfig = cfg.nginxExtraConfig;
  };
in
{
  options.services.kiss.serve = {
    enable = lib.mkEnableOption "serving the kiss binary cache over HTTPS";
    backend = mkOption {
      type = types.enum [ "kiss" "nginx" ];
      default = "kiss";
      description = ''
        "kiss": kiss serve (any store URL, OIDC, leases, write validation).
        "nginx": nginx + mTLS + WebDAV on a flat directory (the original kiss-cache).
      '';
    };
    store = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "s3://nix-cache?region=eu-central-1";
      description = "Store URL to serve (kiss backend: file:// or s3://; nginx backend: file:// only).";
    };
    cacheDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/var/lib/nix-cache";
      description = "Shorthand for store = \"file://<cacheDir>\"; the directory is created and owned by the serving user.";
    };
    hostName = mkOption {
      type = types.str;
      example = "cache.example.org";
      description = "Server name (nginx server_name).";
    };
    listen = mkOption {
      type = types.listOf types.str;
      default = [ "[::]:443" ];
      example = [ "0.0.0.0:443" "[::]:443" ];
      description = "Addresses to listen on (systemd ListenStream= for kiss; nginx listen … ssl).";
    };
    socketActivation = mkOption {
      type = types.bool;
      default = true;
      description = "kiss backend: listen through kiss-serve.socket (no privileges needed for port 443).";
    };
    sslCertificate = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Server certificate (PEM). null only for a plain-HTTP kiss serve behind a proxy.";
    };
    sslCertificateKey = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Server key (PEM); may be readable by root only.";
    };
    clientCA = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "CA for client certificates: every request needs one (mTLS). null: no mTLS (use oidc).";
    };
    writers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "CN=builder-01" "CN=hydra,O=Example" ];
      description = "Subject DNs (RFC 2253, as nginx's $ssl_client_s_dn) allowed to write. Empty: read-only.";
    };
    priority = mkOption {
      type = types.ints.unsigned;
      default = 30;
      description = "Priority announced in nix-cache-info.";
    };
    fallbackCache = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://cache.nixos.org";
      description = "Upstream cache for misses; hits are stored unrooted (the next prune reclaims them).";
    };
    redirectReads = mkOption {
      type = types.enum [ "none" "nar" "all" ];
      default = "none";
      description = ''
        kiss backend over an s3:// store: answer readers' GETs with a redirect to a
        presigned bucket URL, so the bytes go from the bucket to the client ("nar": NARs
        only; "all": every cache object). Clients must be able to reach the bucket's
        endpoint. Excludes fallbackCache.
      '';
    };
    resolvers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "127.0.0.53" ];
      description = ''
        nginx backend: DNS servers to resolve fallbackCache per request.
        Empty: nginx resolves it once at startup (and fails to start while
        DNS is down).
      '';
    };
    leaseGateway = mkOption {
      type = types.bool;
      default = cfg.backend == "nginx" && cfg.writers != [ ];
      defaultText = lib.literalExpression "backend == \"nginx\" && writers != [ ]";
      description = ''
        nginx backend: run a `kiss serve --anonymous-writes` on the unix
        socket ${leaseSocket} (only nginx may connect) and proxy gcroots/ to
        it, after nginx's writer check. Markers and lock leases then get
        conditional writes and remote `kiss with-lock` works against nginx.
      '';
    };
    gcrootsProxy = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://127.0.0.1:8081";
      description = ''
        nginx backend: proxy gcroots/ (markers, lease objects) to a kiss serve
        at this URL, which gives the conditional writes nginx's DAV module
        ignores. null: markers are plain DAV files and lease endpoints answer
        403 (remote `kiss with-lock` then needs the kiss backend).
      '';
    };
    nginxExtraConfig = mkOption {
      type = types.lines;
      default = "";
      example = "ssl_crl /etc/cache/crl.pem;";
      description = "nginx backend: extra directives at the end of the server block (e.g. ssl_crl for revocation).";
    };
    oidc = mkOption {
      default = null;
      description = "kiss backend: bearer-token (OIDC, e.g. GitHub Actions) authentication instead of mTLS.";
      type = types.nullOr (types.submodule {
        options = {
          issuer = mkOption { type = types.str; default = "https://token.actions.githubusercontent.com"; description = "Required iss."; };
          jwksUrl = mkOption { type = types.str; default = "https://token.actions.githubusercontent.com/.well-known/jwks"; description = "JWKS URL."; };
          audience = mkOption { type = types.str; description = "Required aud."; };
          readSubjects = mkOption { type = types.listOf types.str; description = "sub globs that may read."; };
          writeSubjects = mkOption { type = types.listOf types.str; description = "sub globs that may write."; };
        };
      });
    };
    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "kiss backend: systemd EnvironmentFile (S3 credentials).";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the listen ports' TCP ports in the firewall.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "kiss backend: further arguments to kiss serve.";
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        { assertion = (cfg.store == null) != (cfg.cacheDir == null); message = "services.kiss.serve: set exactly one of store and cacheDir."; }
        { assertion = (cfg.sslCertificate == null) == (cfg.sslCertificateKey == null); message = "services.kiss.serve: sslCertificate and sslCertificateKey go together."; }
        { assertion = cfg.backend != "nginx" || cfg.oidc == null; message = "services.kiss.serve: oidc needs backend = \"kiss\"."; }
        { assertion = cfg.backend != "nginx" || (mtls && cfg.sslCertificate != null); message = "services.kiss.serve: the nginx backend needs sslCertificate, sslCertificateKey and clientCA."; }
        { assertion = cfg.backend != "nginx" || cacheDir != null; message = "services.kiss.serve: the nginx backend serves a directory: use cacheDir or a file:// store."; }
        { assertion = !(mtls && cfg.oidc != null); message = "services.kiss.serve: choose clientCA (mTLS) or oidc, not both."; }
        { assertion = cfg.writers == [ ] || mtls; message = "services.kiss.serve: writers are certificate DNs and need clientCA."; }
        { assertion = !cfg.leaseGateway || cfg.backend == "nginx"; message = "services.kiss.serve: leaseGateway is for the nginx backend (kiss serve does leases itself)."; }
        { assertion = cfg.redirectReads == "none" || (cfg.backend == "kiss" && lib.hasPrefix "s3://" store); message = "services.kiss.serve: redirectReads needs backend = \"kiss\" and an s3:// store (it presigns bucket URLs)."; }
        { assertion = cfg.redirectReads == "none" || cfg.fallbackCache == null; message = "services.kiss.serve: redirectReads and fallbackCache exclude each other (a miss must reach the gateway)."; }
      ];
      networking.firewall.allowedTCPPorts = lib.optionals cfg.openFirewall
        (map (l: lib.toInt (lib.last (lib.splitString ":" l))) cfg.listen);
    }

    (lib.mkIf (cfg.backend == "kiss") {
      systemd.sockets.kiss-serve = lib.mkIf cfg.socketActivation {
        description = "kiss binary cache gateway socket";
        wantedBy = [ "sockets.target" ];
        listenStreams = cfg.listen;
        socketConfig.NoDelay = true;
      };
      systemd.services.kiss-serve = {
        description = "kiss binary cache gateway";
        documentation = [ "https://github.com/kiss-cache/kiss/blob/main/docs/nixos.md" ];
        after = [ "network-online.target" ];
        wants = [ "network-online.target" ];
        requires = lib.optional cfg.socketActivation "kiss-serve.socket";
        wantedBy = lib.optional (!cfg.socketActivation) "multi-user.target";
        serviceConfig = {
          ExecStart = lib.escapeShellArgs ([ (lib.getExe kiss.package) ] ++ serveArgs);
          User = kiss.user;
          Group = kiss.group;
          Restart = "on-failure";
          LoadCredential = lib.optionals (cfg.sslCertificate != null) [
            "tls-cert:${cfg.sslCertificate}"
            "tls-key:${cfg.sslCertificateKey}"
          ] ++ lib.optional mtls "client-ca:${cfg.clientCA}";
          # With socket activation systemd binds the port: no capabilities.
          CapabilityBoundingSet = if cfg.socketActivation then "" else "CAP_NET_BIND_SERVICE";
          AmbientCapabilities = if cfg.socketActivation then "" else "CAP_NET_BIND_SERVICE";
          ReadWritePaths = lib.optional (cacheDir != null) cacheDir;
        } // hardening // lib.optionalAttrs (cfg.environmentFile != null) {
          EnvironmentFile = cfg.environmentFile;
        };
      };
      systemd.tmpfiles.rules = lib.optional (cacheDir != null) "d ${cacheDir} 0755 ${kiss.user} ${kiss.group} -";
    })

    (lib.mkIf (cfg.backend == "nginx") {
      services.nginx = {
        enable = true;
        appendHttpConfig = rendered.httpConfig;
      };
      # NixOS runs nginx with ProtectSystem=strict.
      systemd.services.nginx.serviceConfig.ReadWritePaths = [ cacheDir ];
      # gcroots/ behind nginx: a kiss serve only nginx can reach.
      systemd.sockets.kiss-leases = lib.mkIf (cfg.leaseGateway && cfg.gcrootsProxy == null) {
        description = "kiss lease gateway socket (for nginx)";
        wantedBy = [ "sockets.target" ];
        listenStreams = [ leaseSocket ];
        socketConfig = {
          SocketUser = "nginx";
          SocketGroup = "nginx";
          SocketMode = "0600";
        };
      };
      systemd.services.kiss-leases = lib.mkIf (cfg.leaseGateway && cfg.gcrootsProxy == null) {
        description = "kiss lease gateway (markers and leases for nginx)";
        requires = [ "kiss-leases.socket" ];
        serviceConfig = {
          ExecStart = lib.escapeShellArgs [ (lib.getExe kiss.package) "serve" "--store" store "--anonymous-writes" ];
          # Same owner as the files nginx writes.
          User = "nginx";
          Group = "nginx";
          Restart = "on-failure";
          CapabilityBoundingSet = "";
          RestrictAddressFamilies = [ "AF_UNIX" ];
          ReadWritePaths = [ cacheDir ];
        } // builtins.removeAttrs hardening [ "RestrictAddressFamilies" ];
      };
      systemd.tmpfiles.rules = [
        "d ${cacheDir} 0755 nginx nginx -"
        "d ${cacheDir}/.tmp 0700 nginx nginx -"
        "d ${cacheDir}/gcroots 0755 nginx nginx -"
      ];
    })
  ]);
}
