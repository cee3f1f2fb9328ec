# services.kiss.serve: serve a cache over HTTPS with write access control,
# as one or several virtual hosts, and as Tor onion services.
#
# A virtual host is services.kiss.serve itself (units kiss-serve, kiss-leases)
# or an entry of services.kiss.serve.virtualHosts.<name> (units
# kiss-serve-<name>, kiss-leases-<name>). Each has a backend:
#
# backend = "kiss"  (default): `kiss serve`, socket-activated, over any store
#   URL (file:// or s3://): mTLS writers by DN or OIDC bearer tokens, leases
#   with conditional writes, write validation, a fallback upstream.
# backend = "nginx": nginx on port 443 beside the host's other vhosts (SNI).
#   With clientCA: the original kiss-cache deployment, nginx + mTLS + WebDAV
#   on a flat directory, writers by subject DN as `kiss serve --writer`
#   (./nginx-render.nix, tested in a real nginx), gcroots/ proxied to a
#   kiss serve (the lease gateway) for the lease protocol. With oidc: nginx
#   terminates TLS and proxies to a kiss serve on a unix socket that checks
#   the bearer tokens (an mTLS fleet and OIDC CI on one port 443).
#
# services.kiss.serve.tor: two v3 onion services, read and write, whose
# client authorization is the access control (as the original serve-tor),
# each a kiss serve on a unix socket only tor can reach.
{ config, lib, pkgs, ... }:
let
  kissLib = import ./lib.nix { inherit lib; };
  inherit (lib) mkOption types mkIf mkMerge mkDefault optional optionals optionalAttrs
    concatMap concatLists mapAttrsToList filterAttrs attrValues;
  kiss = config.services.kiss;
  top = kiss.serve;
  exe = lib.getExe kiss.package;
  runDir = "/run/kiss";
  torDir = "/run/kiss-tor";

  isLoopback = l: lib.any (p: lib.hasPrefix p l) [ "127." "[::1]:" "localhost:" "/" ];
  portOf = l: lib.toInt (lib.last (lib.splitString ":" l));

  # The options of one virtual host. `cfg` is that host's own config (for
  # defaults that depend on other options of the same host).
  vhostOptions = cfg: kissLib.storeOptions {
    store = "Store URL to serve (file:// or s3://; the nginx backend with mTLS needs a directory).";
    cacheDir = "Shorthand for store = \"file://<cacheDir>\"; the directory is created and owned by the serving user.";
  } // {
    backend = mkOption { example = "nginx";
      type = types.enum [ "kiss" "nginx" ];
      default = "kiss";
      description = ''
        "kiss": kiss serve listens itself (any store URL, mTLS or OIDC, leases, write validation).
        "nginx": nginx serves it on port 443 beside other vhosts: with clientCA the
        original kiss-cache deployment (nginx + mTLS + WebDAV on a directory), with
        oidc a TLS proxy to a kiss serve that checks the tokens.
      '';
    };
    hostName = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "cache.example.org";
      description = "Server name (nginx server_name, required for the nginx backend; informational for the kiss backend).";
    };
    listen = mkOption {
      type = types.listOf types.str;
      default = if cfg.backend == "nginx" then [ "0.0.0.0:443" "[::]:443" ] else [ "[::]:443" ];
      defaultText = lib.literalExpression ''if backend == "nginx" then [ "0.0.0.0:443" "[::]:443" ] else [ "[::]:443" ]'';
      example = [ "0.0.0.0:8443" "[::]:8443" ];
      description = "Addresses to listen on (systemd ListenStream= for kiss; nginx listen … ssl).";
    };
    socketActivation = mkOption { example = false;
      type = types.bool;
      default = true;
      description = "kiss backend: listen through a systemd socket unit (no privileges needed for port 443).";
    };
    sslCertificate = mkOption { example = "/var/lib/acme/cache.example.org/cert.pem";
      type = types.nullOr types.path;
      default = null;
      description = "Server certificate (PEM). null only for a plain-HTTP kiss serve on loopback.";
    };
    sslCertificateKey = mkOption {
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      example = "/run/keys/cache.key";
      description = "Server key (PEM); may be readable by root only (the kiss backend gets it through LoadCredential).";
    };
    clientCA = mkOption { example = "/etc/nix-cache/ca.pem";
      type = types.nullOr types.path;
      default = null;
      description = "CA for client certificates: every request needs one (mTLS). null: no mTLS (use oidc).";
    };
    writers = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "CN=builder-01" "CN=hydra,O=Example" ];
      description = ''
        Subject DNs (RFC 2253, as nginx's $ssl_client_s_dn) allowed to write. A lone
        "CN=name" matches a certificate whose only CN is name. Empty: read-only.
      '';
    };
    priority = mkOption { example = 40;
      type = types.ints.unsigned;
      default = 30;
      description = "Priority announced in nix-cache-info.";
    };
    fallbackCache = mkOption {
      type = types.nullOr (types.strMatching "https?://[^[:space:]]+");
      default = null;
      example = "https://cache.nixos.org";
      description = "Upstream cache for misses; hits are stored unrooted (the next prune reclaims them).";
    };
    redirectReads = mkOption { example = "nar";
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
        nginx backend: DNS servers to resolve fallbackCache per request. Empty:
        nginx resolves it once at startup (and fails to start while DNS is down).
      '';
    };
    leaseGateway = mkOption { example = false;
      type = types.bool;
      default = cfg.backend == "nginx" && cfg.clientCA != null && cfg.writers != [ ];
      defaultText = lib.literalExpression ''backend == "nginx" && clientCA != null && writers != [ ]'';
      description = ''
        nginx backend with mTLS: run a `kiss serve --anonymous-writes` on a unix socket
        under ${runDir}/ (only nginx may connect) and proxy gcroots/ to it, after
        nginx's writer check. Markers and lock leases then get conditional writes and
        remote `kiss with-lock` works against nginx.
      '';
    };
    gcrootsProxy = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "http://127.0.0.1:8081";
      description = ''
        nginx backend with mTLS: proxy gcroots/ to a kiss serve at this URL instead of
        the lease gateway. null and no lease gateway: markers are plain DAV files and
        lease endpoints answer 403.
      '';
    };
    nginxExtraConfig = mkOption {
      type = types.lines;
      default = "";
      example = "ssl_crl /etc/cache/crl.pem;";
      description = "nginx backend: extra directives at the end of the server block (e.g. ssl_crl for revocation).";
    };
    oidc = mkOption { example = lib.literalExpression ''{ audience = "https://cache.example.org"; readSubjects = [ "repo:example/*" ]; writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ]; }'';
      default = null;
      description = "Bearer-token (OIDC, e.g. GitHub Actions) authentication instead of mTLS.";
      type = types.nullOr (types.submodule {
        options = {
          issuer = mkOption { example = "https://gitlab.example.org"; type = types.str; default = "https://token.actions.githubusercontent.com"; description = "Required iss."; };
          jwksUrl = mkOption { example = "https://gitlab.example.org/oauth/discovery/keys"; type = types.str; default = "https://token.actions.githubusercontent.com/.well-known/jwks"; description = "JWKS URL."; };
          audience = mkOption { type = types.str; example = "https://cache.example.org"; description = "Required aud (the cache's URL, so a token minted for another service is refused)."; };
          readSubjects = mkOption { type = types.listOf types.str; example = [ "repo:example/*" ]; description = "sub globs that may read ('*' matches anything)."; };
          writeSubjects = mkOption { type = types.listOf types.str; example = [ "repo:example/infra:ref:refs/heads/main" ]; description = "sub globs that may write (and read)."; };
        };
      });
    };
    environmentFile = mkOption { example = "/run/secrets/kiss-s3.env";
      type = types.nullOr kissLib.types.secretPath;
      default = null;
      description = "systemd EnvironmentFile of the kiss serve (S3 credentials).";
    };
    openFirewall = mkOption { example = true;
      type = types.bool;
      default = false;
      description = "Open the listen ports in the firewall.";
    };
    extraArgs = mkOption { example = [ "--max-upload-size" "4G" ];
      type = types.listOf types.str;
      default = [ ];
      description = "Further arguments to kiss serve.";
    };
  };

  torOptions = kissLib.storeOptions {
    store = "Store to serve over Tor; null: services.kiss.serve's own store.";
    cacheDir = "Shorthand for store = \"file://<cacheDir>\".";
  } // {
    enable = lib.mkEnableOption "serving the cache as two Tor v3 onion services (read and write), client authorization as access control";
    priority = mkOption { example = 40;
      type = types.ints.unsigned;
      default = 30;
      description = "Priority announced in nix-cache-info.";
    };
    readClients = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "descriptor:x25519:7L42AX3VANN4US7ZTCLDZRJP2ZRK2WETF5LCB3VFFMPDO4TJPEMQ" ];
      description = ''
        Public keys ("descriptor:x25519:<base32>") of the clients that may read (resolve
        the read onion). Empty: the read onion is public to anyone who knows its address.
        A writer reads too: list it here as well.
      '';
    };
    writeClients = mkOption { example = [ "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ" ];
      type = types.listOf types.str;
      default = [ ];
      description = ''
        Public keys of the clients that may write. Empty: no write onion (an
        unauthenticated write onion would let anyone with the address poison the cache).
      '';
    };
  };

  # Every virtual host, by name ("" is services.kiss.serve itself).
  vhosts = optionalAttrs top.enable { "" = top; } // filterAttrs (_: v: v.enable) top.virtualHosts;
  where = name: if name == "" then "services.kiss.serve" else "services.kiss.serve.virtualHosts.${name}";
  suffix = name: if name == "" then "" else "-${name}";
  storeOf = name: v: kissLib.storeOf (where name) v;
  dirOf = kissLib.dirOf';
  mtls = v: v.clientCA != null;
  nginxMTLS = v: v.backend == "nginx" && mtls v;
  nginxProxied = v: v.backend == "nginx" && v.oidc != null;
  leaseSocket = name: "${runDir}/leases${suffix name}.sock";
  serveSocket = name: "${runDir}/serve${suffix name}.sock";
  leasesOn = v: nginxMTLS v && v.leaseGateway && v.gcrootsProxy == null;

  # Files of a directory store are written by nginx (DAV) and kiss serve
  # alike: when nginx serves a directory, every kiss serve on it runs as nginx.
  nginxDirs = lib.unique (concatLists (mapAttrsToList (_: v: optional (nginxMTLS v && dirOf v != null) (dirOf v)) vhosts));
  ownerOf = dir: if dir != null && lib.elem dir nginxDirs then config.services.nginx.user else kiss.user;
  groupOf = dir: if dir != null && lib.elem dir nginxDirs then config.services.nginx.group else kiss.group;

  # Credentials reach the unit through LoadCredential, so keys can stay
  # readable by root only while kiss runs unprivileged.
  cred = kissLib.credential;

  authArgs = v:
    lib.optionals (mtls v) [ "--client-ca" (cred "client-ca") ]
    ++ concatMap (w: [ "--writer" w ]) v.writers
    ++ lib.optionals (v.oidc != null) ([
      "--oidc-issuer" v.oidc.issuer
      "--oidc-audience" v.oidc.audience
      "--oidc-jwks-url" v.oidc.jwksUrl
    ]
    ++ concatMap (s: [ "--oidc-read-subject" s ]) v.oidc.readSubjects
    ++ concatMap (s: [ "--oidc-write-subject" s ]) v.oidc.writeSubjects);

  # kiss serve for the kiss backend (TLS itself) and for nginx + OIDC
  # (plain HTTP on a unix socket behind nginx).
  serveArgs = name: v:
    [ "serve" "--store" (storeOf name v) ]
    ++ optionals (v.backend == "kiss" && !v.socketActivation) (concatMap (l: [ "--listen" l ]) v.listen)
    ++ optionals (v.backend == "kiss" && v.sslCertificate != null) [ "--tls-cert" (cred "tls-cert") "--tls-key" (cred "tls-key") ]
    ++ authArgs v
    ++ optionals (v.fallbackCache != null) [ "--upstream" v.fallbackCache ]
    ++ optionals (v.redirectReads != "none") [ "--redirect-reads" v.redirectReads ]
    ++ [ "--priority" (toString v.priority) ]
    ++ v.extraArgs;

  serveUnit = { description, args, dir, user, group, credentials ? [ ], socket ? null, families ? null, environmentFile ? null }: {
    inherit description;
    documentation = [ kissLib.docUrl ];
    after = [ "network-online.target" ];
    wants = [ "network-online.target" ];
    requires = optional (socket != null) "${socket}.socket";
    wantedBy = optional (socket == null) "multi-user.target";
    serviceConfig = kissLib.hardening // {
      ExecStart = kissLib.execLine ([ exe ] ++ args);
      User = user;
      Group = group;
      Restart = "on-failure";
      LoadCredential = credentials;
      # With socket activation systemd binds the port: no capabilities.
      CapabilityBoundingSet = if socket != null then "" else "CAP_NET_BIND_SERVICE";
      AmbientCapabilities = if socket != null then "" else "CAP_NET_BIND_SERVICE";
      ReadWritePaths = optional (dir != null) dir;
    } // optionalAttrs (families != null) {
      RestrictAddressFamilies = families;
    } // optionalAttrs (environmentFile != null) {
      EnvironmentFile = environmentFile;
    };
  };

  unixSocket = { description, path, user, group }: {
    inherit description;
    wantedBy = [ "sockets.target" ];
    listenStreams = [ path ];
    socketConfig = {
      SocketUser = user;
      SocketGroup = group;
      SocketMode = "0600";
      DirectoryMode = "0755";
    };
  };

  vhostServices = name: v:
    let
      dir = dirOf v;
      sfx = suffix name;
    in
    # kiss serve: listening itself (kiss backend), or behind nginx on a unix socket.
    optionalAttrs (v.backend == "kiss" || nginxProxied v) {
      "kiss-serve${sfx}" = serveUnit {
        description = "kiss binary cache gateway${lib.optionalString (nginxProxied v) " behind nginx"}${lib.optionalString (name != "") " (${name})"}";
        args = serveArgs name v;
        inherit dir;
        user = ownerOf dir;
        group = groupOf dir;
        credentials = optionals (v.backend == "kiss" && v.sslCertificate != null) [ "tls-cert:${v.sslCertificate}" "tls-key:${v.sslCertificateKey}" ]
          ++ optional (mtls v) "client-ca:${v.clientCA}";
        socket = if nginxProxied v || v.socketActivation then "kiss-serve${sfx}" else null;
        inherit (v) environmentFile;
      };
    }
    // optionalAttrs (leasesOn v) {
      "kiss-leases${sfx}" = serveUnit {
        description = "kiss lease gateway (markers and leases for nginx)${lib.optionalString (name != "") " (${name})"}";
        args = [ "serve" "--store" (storeOf name v) "--anonymous-writes" ];
        inherit dir;
        user = config.services.nginx.user;
        group = config.services.nginx.group;
        socket = "kiss-leases${sfx}";
        # It only talks to nginx over its socket and to the directory.
        families = [ "AF_UNIX" ];
      };
    };

  vhostSockets = name: v:
    let sfx = suffix name; in
    optionalAttrs (v.backend == "kiss" && v.socketActivation) {
      "kiss-serve${sfx}" = {
        description = "kiss binary cache gateway socket${lib.optionalString (name != "") " (${name})"}";
        wantedBy = [ "sockets.target" ];
        listenStreams = v.listen;
        socketConfig.NoDelay = true;
      };
    }
    // optionalAttrs (nginxProxied v) {
      "kiss-serve${sfx}" = unixSocket {
        description = "kiss binary cache gateway socket for nginx${lib.optionalString (name != "") " (${name})"}";
        path = serveSocket name;
        user = config.services.nginx.user;
        group = config.services.nginx.group;
      };
    }
    // optionalAttrs (leasesOn v) {
      "kiss-leases${sfx}" = unixSocket {
        description = "kiss lease gateway socket for nginx${lib.optionalString (name != "") " (${name})"}";
        path = leaseSocket name;
        user = config.services.nginx.user;
        group = config.services.nginx.group;
      };
    };

  nginxName = name: "kiss" + lib.replaceStrings [ "-" ] [ "_" ] (if name == "" then "" else "_${name}");

  renderNginx = name: v: (import ./nginx-render.nix ({
    name = nginxName name;
    inherit (v) listen sslCertificate sslCertificateKey;
    serverName = v.hostName;
    extraConfig = v.nginxExtraConfig;
  } // (if nginxProxied v then {
    proxyTo = "http://unix:${serveSocket name}:";
  } else {
    cacheDir = dirOf v;
    inherit (v) clientCA writers priority fallbackCache resolvers;
    gcrootsProxy =
      if v.gcrootsProxy != null then v.gcrootsProxy
      else if v.leaseGateway then "http://unix:${leaseSocket name}:"
      else null;
  }))).httpConfig;

  # A directory store gets its nix-cache-info when it has none (nginx and
  # kiss serve answer /nix-cache-info themselves; the pruner refuses a
  # directory without one, as not a binary cache).
  cacheInfoRule = dir: priority:
    "f ${dir}/nix-cache-info 0644 ${ownerOf dir} ${groupOf dir} - StoreDir: /nix/store\\nWantMassQuery: 1\\nPriority: ${toString priority}\\n";

  # A served directory, and the directories kiss writes through, owned by
  # the serving user: the pruner (root by default), kiss-publish in local
  # mode or an admin's kiss run as root would otherwise create gcroots/,
  # gcroots/.lock/ (leases) or .kiss/tmp/ (where the file store stages
  # every object) root-owned when they are missing — a prune does, even
  # one that refuses — and every later write of the serving user would
  # fail. tmpfiles also gives them back on boot and on a switch.
  dirRules = dir: priority: map (d: "d ${d} 0755 ${ownerOf dir} ${groupOf dir} -") [ dir "${dir}/gcroots" "${dir}/gcroots/.lock" "${dir}/.kiss" "${dir}/.kiss/tmp" ]
    ++ [ (cacheInfoRule dir priority) ];

  vhostTmpfiles = name: v:
    let dir = dirOf v; in
    optionals (dir != null) (dirRules dir v.priority
      ++ optional (nginxMTLS v) "d ${dir}/.tmp 0700 ${ownerOf dir} ${groupOf dir} -");

  firstPerPath = rules: lib.foldl'
    (acc: r: if lib.any (a: lib.take 2 (lib.splitString " " a) == lib.take 2 (lib.splitString " " r)) acc then acc else acc ++ [ r ])
    [ ]
    rules;

  vhostAssertions = name: v:
    let
      w = where name;
      dir = dirOf v;
    in
    [
      { assertion = name == "" || builtins.match "[a-z0-9][a-z0-9-]*" name != null; message = "${w}: a virtual host's name must match [a-z0-9][a-z0-9-]* (it names units and nginx variables)."; }
      { assertion = (v.store == null) != (v.cacheDir == null); message = "${w}: set exactly one of store and cacheDir."; }
      { assertion = (v.sslCertificate == null) == (v.sslCertificateKey == null); message = "${w}: sslCertificate and sslCertificateKey go together."; }
      { assertion = !(mtls v && v.oidc != null); message = "${w}: choose clientCA (mTLS) or oidc, not both, on one virtual host (use two virtual hosts)."; }
      { assertion = v.writers == [ ] || mtls v; message = "${w}: writers are certificate DNs and need clientCA."; }
      { assertion = v.backend != "nginx" || v.sslCertificate != null; message = "${w}: the nginx backend needs sslCertificate and sslCertificateKey."; }
      { assertion = v.backend != "nginx" || v.hostName != null; message = "${w}: the nginx backend needs hostName (its server_name)."; }
      { assertion = v.backend != "nginx" || mtls v || v.oidc != null; message = "${w}: the nginx backend needs clientCA (mTLS) or oidc."; }
      { assertion = !(nginxMTLS v) || dir != null; message = "${w}: the nginx backend with mTLS serves a directory: use cacheDir or a file:// store."; }
      { assertion = !v.leaseGateway || nginxMTLS v; message = "${w}: leaseGateway is for the nginx backend with mTLS (kiss serve does leases itself)."; }
      { assertion = v.redirectReads == "none" || (v.backend == "kiss" && lib.hasPrefix "s3://" (storeOf name v)); message = "${w}: redirectReads needs backend = \"kiss\" and an s3:// store (it presigns bucket URLs)."; }
      { assertion = v.redirectReads == "none" || v.fallbackCache == null; message = "${w}: redirectReads and fallbackCache exclude each other (a miss must reach the gateway)."; }
      { assertion = v.backend != "kiss" || v.sslCertificate != null || lib.all isLoopback v.listen; message = "${w}: without sslCertificate kiss serve only listens on loopback (it refuses plain HTTP elsewhere)."; }
    ];

  # Two listeners on one port conflict unless both are nginx server blocks
  # (nginx picks the server by SNI).
  listeners = concatLists (mapAttrsToList (name: v: map (l: { inherit name l; nginx = v.backend == "nginx"; port = portOf l; }) v.listen) vhosts);
  clashes = lib.filter (a: lib.any (b: a.name < b.name && a.port == b.port && !(a.nginx && b.nginx)) listeners) listeners;
  serverNames = mapAttrsToList (name: v: toString v.hostName) (filterAttrs (_: v: v.backend == "nginx") vhosts);

  # Tor.
  tor = top.tor;
  torStore =
    if tor.store != null then tor.store
    else if tor.cacheDir != null then "file://${tor.cacheDir}"
    else if top.enable then storeOf "" top
    else throw "services.kiss.serve.tor: set store or cacheDir (or enable services.kiss.serve)";
  torDirPath = if tor.store != null || tor.cacheDir != null then dirOf tor else if top.enable then dirOf top else null;
  torKeyRe = "descriptor:x25519:[A-Z2-7]{52}";
  torOnion = kind: clients: {
    version = 3;
    map = [{ port = 80; target.unix = "${torDir}/${kind}.sock"; }];
    authorizedClients = clients;
  };
  torServe = kind: args: serveUnit {
    description = "kiss binary cache over Tor (${kind} onion)";
    args = [ "serve" "--store" torStore "--priority" (toString tor.priority) ] ++ args;
    dir = torDirPath;
    user = ownerOf torDirPath;
    group = groupOf torDirPath;
    socket = "kiss-tor-${kind}";
  };
  torSocket = kind: {
    description = "kiss binary cache socket for the Tor ${kind} onion";
    wantedBy = [ "sockets.target" ];
    listenStreams = [ "${torDir}/${kind}.sock" ];
    socketConfig = {
      SocketUser = "root";
      SocketGroup = "tor";
      SocketMode = "0660";
    };
  };
  torWrite = tor.writeClients != [ ];
in
{
  options.services.kiss.serve = vhostOptions top // {
    enable = lib.mkEnableOption "serving the kiss binary cache over HTTPS (units kiss-serve, kiss-leases)";
    virtualHosts = mkOption {
      default = { };
      example = lib.literalExpression ''
        {
          ci = {
            backend = "nginx";
            cacheDir = "/var/lib/nix-cache";
            hostName = "ci-cache.example.org";
            sslCertificate = "/run/keys/ci-cache.pem";
            sslCertificateKey = "/run/keys/ci-cache.key";
            oidc = { audience = "https://ci-cache.example.org"; readSubjects = [ "repo:example/*" ]; writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ]; };
          };
        }
      '';
      description = ''
        More virtual hosts, each with the options of services.kiss.serve (plus enable), e.g. an
        OIDC vhost for CI beside the mTLS one for the fleet, on the same cache. Units are named
        kiss-serve-<name> and kiss-leases-<name>.
      '';
      type = types.attrsOf (types.submodule ({ config, ... }: {
        options = vhostOptions config // {
          enable = mkOption { type = types.bool; default = true; example = false; description = "Whether to serve this virtual host."; };
        };
      }));
    };
    tor = torOptions;
  };

  config = {
    assertions = concatLists (mapAttrsToList vhostAssertions vhosts)
      ++ map (c: { assertion = false; message = "services.kiss.serve: ${where c.name} and another virtual host both listen on port ${toString c.port} (${c.l}); only nginx virtual hosts can share a port."; }) clashes
      ++ [{ assertion = lib.length serverNames == lib.length (lib.unique serverNames); message = "services.kiss.serve: two nginx virtual hosts have the same hostName (${toString serverNames})."; }]
      ++ optionals tor.enable ([
        { assertion = tor.store == null || tor.cacheDir == null; message = "services.kiss.serve.tor: set at most one of store and cacheDir."; }
      ] ++ map (k: { assertion = builtins.match torKeyRe k != null; message = "services.kiss.serve.tor: client key '${k}' is not descriptor:x25519:<52 base32 characters> (tor would refuse it)."; })
        (tor.readClients ++ tor.writeClients));

    warnings = optional (tor.enable && tor.readClients == [ ])
      "services.kiss.serve.tor: readClients is empty: the read onion is public to anyone who knows its address.";

    systemd.services = mkMerge (mapAttrsToList vhostServices vhosts ++ [
      (mkIf (lib.any nginxMTLS (attrValues vhosts)) {
        # NixOS runs nginx with ProtectSystem=strict.
        nginx.serviceConfig.ReadWritePaths = nginxDirs;
      })
      (mkIf tor.enable ({
        kiss-tor-read = torServe "read" [ "--read-only" ];
        # tor runs chrooted: the sockets' directory is bound into it.
        tor.serviceConfig.BindPaths = [ torDir ];
      } // optionalAttrs torWrite {
        kiss-tor-write = torServe "write" [ "--anonymous-writes" ];
      }))
    ]);

    systemd.sockets = mkMerge (mapAttrsToList vhostSockets vhosts ++ [
      (mkIf tor.enable ({ kiss-tor-read = torSocket "read"; } // optionalAttrs torWrite { kiss-tor-write = torSocket "write"; }))
    ]);

    # One rule per type and path (vhosts on one directory may differ in priority).
    systemd.tmpfiles.rules = firstPerPath (concatLists (mapAttrsToList vhostTmpfiles vhosts)
      ++ optionals tor.enable ([ "d ${torDir} 0750 root tor -" ]
      ++ optionals (torDirPath != null) (dirRules torDirPath tor.priority)));

    services.nginx = mkIf (lib.any (v: v.backend == "nginx") (attrValues vhosts)) {
      enable = true;
      appendHttpConfig = lib.concatStringsSep "\n" (mapAttrsToList renderNginx (filterAttrs (_: v: v.backend == "nginx") vhosts));
    };

    services.tor = mkIf tor.enable {
      enable = true;
      relay.onionServices = {
        kiss-read = torOnion "read" tor.readClients;
      } // optionalAttrs torWrite {
        kiss-write = torOnion "write" tor.writeClients;
      };
    };

    networking.firewall.allowedTCPPorts = lib.unique (concatLists (mapAttrsToList
      (_: v: optionals v.openFirewall (map portOf v.listen)) vhosts));

    services.kiss.userNeededBy = optional
      (lib.any (v: ownerOf (dirOf v) == kiss.user && (v.backend == "kiss" || nginxProxied v)) (attrValues vhosts)
        || tor.enable && ownerOf torDirPath == kiss.user)
      "services.kiss.serve";
  };
}
