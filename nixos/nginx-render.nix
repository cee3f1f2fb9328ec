# Renders the nginx configuration of the "nginx" serve backend: a flat cache
# directory behind mutual TLS, with WebDAV PUT for writers chosen by subject DN
# (the user-facing model of the original kiss-cache).
#
# Pure builtins on purpose: the NixOS module imports this file, and the test
# suite renders it with `nix eval --raw --impure --expr 'import ./nginx-render.nix {…}'`
# and runs the real nginx on the result. What is tested is therefore exactly
# the text a NixOS host gets (no nixpkgs needed to produce it).
#
# A second form, with proxyTo set, terminates TLS (no client certificate)
# and proxies every request to a kiss serve that authenticates by itself,
# e.g. with OIDC bearer tokens: several such and mTLS servers can share
# port 443 through SNI.
#
# The result is an attribute set:
#   httpConfig    maps + one server block, for the http{} context
#                 (services.nginx.appendHttpConfig on NixOS)
#   nixCacheInfo  the body served at /nix-cache-info
#   writerMap     the name of the 0/1 variable telling writers apart
{
  # Short identifier, makes the map variables unique when several caches
  # are served by one nginx. Letters, digits and "_" only.
  name ? "kiss"
, # "addr:port" or "port" strings; each gets `ssl`.
  listen ? [ "443" "[::]:443" ]
, serverName ? "_"
, # The flat cache directory (what `kiss prune file://…` prunes).
  cacheDir ? null
, sslCertificate
, sslCertificateKey
, # CA that signs client certificates. Every request needs one (400 without).
  clientCA ? null
, # Proxy everything to this kiss serve (e.g. "http://unix:/run/kiss/serve-ci.sock:")
  # instead of serving cacheDir: the proxy form above.
  proxyTo ? null
, ssl_verify_depth ? 2
, # Exact RFC 2253 subject DNs as nginx prints $ssl_client_s_dn, e.g.
  # "CN=builder-01" or "CN=hydra,O=Example". Empty: the cache is read-only.
  writers ? [ ]
, priority ? 30
, # Upstream cache for misses (e.g. "https://cache.nixos.org"); hits are
  # stored in cacheDir (unrooted: the next prune reclaims what no root keeps).
  fallbackCache ? null
, # When set (e.g. "http://127.0.0.1:8081" or "http://unix:/run/kiss/serve.sock:"),
  # gcroots/ (markers and lock leases) is proxied to a `kiss serve` there,
  # which gives conditional writes (If-None-Match/If-Match) that nginx's DAV
  # module ignores. Without it markers are plain DAV files and lease
  # endpoints answer 403: remote `kiss with-lock` then needs `kiss serve`.
  gcrootsProxy ? null
, # DNS servers for fallbackCache. Without them nginx resolves the upstream
  # host once, at startup, and refuses to start when DNS is not up yet; with
  # them the name is resolved per request (proxy_pass through a variable).
  resolvers ? [ ]
, # Where nginx writes request bodies before renaming them into place. It
  # must be on the cache's filesystem (atomic rename). The pruner ignores
  # dot-directories.
  tmpDir ? "${toString cacheDir}/.tmp"
, # Maximum NAR upload; "0" = unlimited.
  maxBodySize ? "0"
, extraConfig ? ""
}:
let
  inherit (builtins) concatStringsSep map match replaceStrings toString length elemAt all;

  # Only safe identifiers end up in variable names.
  checkedName =
    if match "[A-Za-z0-9_]+" name != null then name
    else throw "nginx-render: name must match [A-Za-z0-9_]+, got '${name}'";

  # nginx string literal: double quotes with backslash escapes (a newline
  # becomes \n, which nginx turns back into a newline).
  # "$" would be read as a variable and has no escape: refused too.
  quote = s:
    if match ".*[\r$].*" s != null then throw "nginx-render: value contains a carriage return or '$': ${s}"
    else "\"" + replaceStrings [ "\\" "\"" "\n" ] [ "\\\\" "\\\"" "\\n" ] s + "\"";

  # Paths and URLs go unquoted into directives; refuse what would break them.
  bare = what: s:
    if match "[^[:space:];{}\"'`]+" (toString s) != null then toString s
    else throw "nginx-render: ${what} '${toString s}' contains whitespace or one of ; { } quotes";

  writerVar = "$kiss_writer_${checkedName}";
  denyVar = "$kiss_deny_${checkedName}";
  # The lease gateway behind gcrootsProxy runs with --anonymous-writes, so
  # what kiss serve keeps for writers even to read (leases, listings of
  # the cache) must be refused here: non-writers may ask the root for
  # nothing but the capabilities (/?kiss=info).
  rootDenyVar = "$kiss_rootdeny_${checkedName}";
  writersOnly = "if (${writerVar} != 1) { return 403; }";

  # Writers are matched like `kiss serve --writer` (gateway.ClientCerts):
  # an entry with several attributes ("CN=hydra,O=Example") must equal
  # $ssl_client_s_dn exactly; an entry that is one CN attribute
  # ("CN=builder-01") matches a DN holding exactly one CN attribute, equal
  # to it, wherever it stands ("O=x,CN=builder-01" too), and never one with
  # a second CN ("CN=builder-01,CN=reader", "CN=builder-01+CN=reader").
  # nginx prints the DN as RFC 2253 with "\" escapes, so the regex walks it
  # attribute by attribute: an attribute is (?:[^,+\\]|\\.)* and the
  # separators are unescaped "," and "+". A DN starting with "~" would be
  # a regex itself: refused.
  pcreEscape = s: builtins.concatStringsSep "" (map
    (c: if match "[A-Za-z0-9 _-]" c != null then c else "\\" + c)
    (builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s)));
  # One CN attribute: no unescaped "," or "+".
  isCNShorthand = dn: match "CN=([^,+\\]|\\\\.)+" dn != null;
  attr = "(?:[^,+\\\\]|\\\\.)*";
  otherAttr = "(?!CN=)${attr}";
  cnRegex = dn: "^(?:${otherAttr}[,+])*${pcreEscape dn}(?:[,+]${otherAttr})*$";
  # A map key in double quotes: nginx turns \\ into \ and \" into ".
  # (No variables are expanded in map keys, so "$" needs no escape.)
  quoteKey = s: "\"" + replaceStrings [ "\\" "\"" ] [ "\\\\" "\\\"" ] s + "\"";
  writerLine = dn:
    if dn == "" || builtins.substring 0 1 dn == "~" || match ".*[\n\r].*" dn != null then throw "nginx-render: bad writer DN '${dn}'"
    else if isCNShorthand dn then "${quoteKey "~${cnRegex dn}"} 1;"
    else "${quoteKey dn} 1;";

  nixCacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: ${toString priority}\n";

  hasWriters = writers != [ ];

  # Output is built as lists of lines; `block` indents a block's body, so
  # the rendered file reads like a hand-written one.
  block = head: body: [ "${head} {" ] ++ map (l: if l == "" then "" else "  " + l) body ++ [ "}" ];
  when = c: l: if c then l else [ ];

  dav = methods: maxBody: [
    "dav_methods ${methods};"
    "create_full_put_path on;"
    "dav_access user:rw group:r all:r;"
    "client_max_body_size ${maxBody};"
  ];
  deny = "if (${denyVar}) { return 403; }";

  # proxy_pass inside a named location must not carry a URI part: keep
  # scheme://host[:port] only.
  fallbackParts = if fallbackCache == null then null else match "(https?)://([^/]+)(/.*)?" fallbackCache;
  fallbackOrigin =
    if fallbackCache == null then null
    else if fallbackParts == null then throw "nginx-render: fallbackCache must be an http(s):// URL, got '${fallbackCache}'"
    else "${elemAt fallbackParts 0}://${bare "fallbackCache" (elemAt fallbackParts 1)}";
  fallbackHost = if fallbackParts == null then null else elemAt fallbackParts 1;
  upstreamVar = "$kiss_upstream_${checkedName}";

  # As kiss serve sends (nixcache's rules): a NAR is named by its file hash
  # and never changes; a narinfo, .ls or debuginfo link is named by a store
  # path or build id, and a prune deletes it and a writer may put it again,
  # so a shared cache in front must revalidate it rather than keep offering
  # a path whose NAR is gone.
  cacheControlVar = "$kiss_cache_control_${checkedName}";
  rootLocation = block "location /" ([
    deny
    "add_header Cache-Control ${cacheControlVar};"
  ]
  ++ when hasWriters (dav "PUT" (bare "maxBodySize" maxBodySize))
  ++ when (fallbackCache != null) [ "error_page 404 = @kiss_fallback_${checkedName};" ]);

  fallbackLocation = when (fallbackCache != null) ([ "" ] ++ block "location @kiss_fallback_${checkedName}" ([
    "internal;"
  ]
  ++ (if resolvers == [ ] then [
    "proxy_pass ${fallbackOrigin};"
  ] else [
    "resolver ${concatStringsSep " " (map (bare "resolver") resolvers)} valid=300s;"
    "set ${upstreamVar} ${fallbackOrigin};"
    "proxy_pass ${upstreamVar};"
  ])
  ++ [
    "proxy_set_header Host ${bare "fallback host" fallbackHost};"
    "proxy_ssl_server_name on;"
    "proxy_intercept_errors off;"
    "proxy_store on;"
    "proxy_store_access user:rw group:r all:r;"
    "proxy_temp_path ${bare "tmpDir" tmpDir};"
  ]));

  toGateway = [
    deny
    "expires off;"
    "add_header Cache-Control no-store always;"
    "client_max_body_size 64k;"
    "proxy_pass ${bare "gcrootsProxy" gcrootsProxy};"
    "proxy_set_header Host $host;"
    "proxy_set_header X-Forwarded-Proto $scheme;"
    "proxy_set_header X-Kiss-Client-DN $ssl_client_s_dn;"
    "proxy_request_buffering on;"
  ];

  gcrootsLocations = [ "" ] ++ (
    if gcrootsProxy != null then
      [ "# Markers and lease objects go to kiss serve: conditional writes." ]
      ++ block "location ^~ /gcroots/" toGateway
      ++ [ "# Leases are writers' business, even to read (as in kiss serve)." ]
      ++ block "location ^~ /gcroots/.lock" ([ writersOnly ] ++ toGateway)
      ++ [ "# kiss's client API at the root: /?kiss=info for readers, listings for writers." ]
      ++ block "location = /" ([ "if (${rootDenyVar}) { return 403; }" ] ++ toGateway)
    else
      block "location ^~ /gcroots/" ([
        deny
        "expires off;"
        "add_header Cache-Control no-store always;"
      ] ++ when hasWriters (dav "PUT DELETE" "4k"))
      ++ [
        "# nginx's DAV module ignores If-None-Match/If-Match, so it cannot host"
        "# the lease protocol: refuse rather than pretend (use gcrootsProxy)."
      ]
      ++ block "location ^~ /gcroots/.lock/" [ "return 403;" ]
  );

  tlsLines = map (l: "listen ${bare "listen" l} ssl;") listen ++ [
    "server_name ${bare "serverName" serverName};"
    "ssl_certificate ${bare "sslCertificate" sslCertificate};"
    "ssl_certificate_key ${bare "sslCertificateKey" sslCertificateKey};"
    "ssl_protocols TLSv1.2 TLSv1.3;"
  ];

  # The proxy form: TLS here, authentication in kiss serve. Bodies stream
  # both ways (no buffering: NARs can be large, and kiss validates uploads
  # itself); the Authorization header passes unchanged.
  proxyLines =
    [ "# kiss cache \"${checkedName}\" behind kiss serve (rendered by nixos/nginx-render.nix)" ]
    ++ block "server" (tlsLines ++ [
      "client_max_body_size 0;"
    ]
    ++ block "location /" [
      "proxy_pass ${bare "proxyTo" proxyTo};"
      "proxy_http_version 1.1;"
      "proxy_set_header Host $host;"
      "proxy_set_header X-Forwarded-Proto $scheme;"
      "proxy_set_header X-Forwarded-For $remote_addr;"
      "proxy_request_buffering off;"
      "proxy_buffering off;"
      "proxy_read_timeout 1h;"
      "proxy_send_timeout 1h;"
    ]
    ++ when (extraConfig != "") ([ "" ] ++ extraLines));

  lines =
    if proxyTo != null then proxyLines
    else if cacheDir == null || clientCA == null then throw "nginx-render: cacheDir and clientCA are required (or proxyTo)"
    else
    [ "# kiss cache \"${checkedName}\" (rendered by nixos/nginx-render.nix)" ]
    ++ block "map $ssl_client_s_dn ${writerVar}" ([ "default 0;" ] ++ map writerLine writers)
    ++ block "map \"$request_method:${writerVar}\" ${denyVar}" [
      "default 1;"
      "\"~^(GET|HEAD):\" 0;"
      "\"~:1$\" 0;"
    ]
    ++ block "map $uri ${cacheControlVar}" [
      "default no-cache;"
      "~^/nar/ \"public, max-age=31536000, immutable\";"
    ]
    ++ when (gcrootsProxy != null) (block "map \"${writerVar}:$args\" ${rootDenyVar}" [
      "default 1;"
      "\"~^1:\" 0;"
      "\"0:kiss=info\" 0;"
    ])
    ++ block "server" (
      tlsLines
      ++ [
        "ssl_client_certificate ${bare "clientCA" clientCA};"
        "ssl_verify_client on;"
        "ssl_verify_depth ${toString ssl_verify_depth};"
        "root ${bare "cacheDir" cacheDir};"
        "client_body_temp_path ${bare "tmpDir" tmpDir};"
      ]
      ++ block "types" [
        "text/x-nix-narinfo narinfo;"
        "application/x-nix-nar nar;"
        "application/json ls;"
        "text/plain drv;"
      ]
      ++ [
        "default_type application/octet-stream;"
        ""
        "# Dotfiles (temp bodies, .kiss/ state) are never served or written."
      ]
      ++ block "location ~ /\\." [ "return 404;" ]
      ++ block "location = /nix-cache-info" [
        deny
        "default_type text/plain;"
        "return 200 ${quote nixCacheInfo};"
      ]
      ++ rootLocation
      ++ fallbackLocation
      ++ gcrootsLocations
      ++ when (extraConfig != "") ([ "" ] ++ extraLines)
    );

  # extraConfig as lines, without the empty one after a final newline.
  extraSplit = builtins.filter builtins.isString (builtins.split "\n" extraConfig);
  extraLines = if extraSplit != [ ] && builtins.elemAt extraSplit (builtins.length extraSplit - 1) == ""
    then builtins.genList (builtins.elemAt extraSplit) (builtins.length extraSplit - 1)
    else extraSplit;

  httpConfig = concatStringsSep "\n" lines + "\n";
in
assert all (w: builtins.isString w) writers;
{
  inherit httpConfig nixCacheInfo;
  writerMap = writerVar;
}
