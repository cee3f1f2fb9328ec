# Renders what NixOS would write for the options of ./nixos-options.nix:
# systemd unit files and the torrc, written for this harness after NixOS's
# generators (nixos/lib/systemd-lib.nix: attrsToSection, serviceToUnit,
# socketToUnit, timerToUnit; services/security/tor.nix: genTorrc and the
# ExecStartPre that writes client authorization files). The tests check the
# results with the real systemd-analyze and the real tor; NixOS's own
# generators run in the flake's VM tests.
{ lib }:
let
  inherit (lib) concatStrings concatStringsSep concatLists mapAttrsToList optionalString optionalAttrs isList;

  toOption = x: if x == true then "true" else if x == false then "false" else toString x;
  attrsToSection = as: concatStrings (concatLists (mapAttrsToList
    (name: value: map (x: "${name}=${toOption x}\n") (if isList value then value else [ value ]))
    as));

  unitSection = def:
    optionalAttrs (def.requires != [ ]) { Requires = toString def.requires; }
    // optionalAttrs (def.wants != [ ]) { Wants = toString def.wants; }
    // optionalAttrs (def.after != [ ]) { After = toString def.after; }
    // optionalAttrs (def.before != [ ]) { Before = toString def.before; }
    // optionalAttrs (def.bindsTo != [ ]) { BindsTo = toString def.bindsTo; }
    // optionalAttrs (def.partOf != [ ]) { PartOf = toString def.partOf; }
    // optionalAttrs (def.conflicts != [ ]) { Conflicts = toString def.conflicts; }
    // optionalAttrs (def.description != "") { Description = def.description; }
    // optionalAttrs (def.documentation != [ ]) { Documentation = toString def.documentation; }
    // def.unitConfig;

  common = def: lines:
    "[Unit]\n${attrsToSection (unitSection def)}\n" + lines
    + optionalString (def.wantedBy != [ ]) "\n[Install]\nWantedBy=${concatStringsSep " " def.wantedBy}\n";

  service = def:
    if def.script != "" || def.preStart != "" then throw "render.nix: script/preStart are not rendered by this harness"
    else
      let
        env = def.environment // optionalAttrs (def.path != [ ]) { PATH = lib.makeBinPath def.path; };
      in
      common def ("[Service]\n"
        + concatStrings (map (n: optionalString (env.${n} != null) "Environment=${builtins.toJSON "${n}=${toString env.${n}}"}\n") (builtins.attrNames env))
        + optionalString (!def.restartIfChanged) "X-RestartIfChanged=false\n"
        + attrsToSection def.serviceConfig);
  socket = def: common def ("[Socket]\n${attrsToSection def.socketConfig}\n"
    + concatStringsSep "\n" (map (s: "ListenStream=${s}") def.listenStreams) + "\n"
    + concatStringsSep "\n" (map (s: "ListenDatagram=${s}") def.listenDatagrams) + "\n");
  timer = def: common def "[Timer]\n${attrsToSection def.timerConfig}\n";

  unitsOf = kind: render: defs: lib.mapAttrs' (name: def: lib.nameValuePair "${name}.${kind}" {
    text = render def;
    inherit (def) aliases wantedBy;
  }) (lib.filterAttrs (_: d: d.enable) defs);

  # torrc: `Key value` lines, lists as repeated keys, booleans 1/0.
  torValue = v:
    if lib.isBool v then (if v then "1" else "0")
    else if lib.isAttrs v && (v.unix or null) != null then "unix:${v.unix}"
    else if lib.isAttrs v && (v.port or null) != null then optionalString ((v.addr or null) != null) "${v.addr}:" + toString v.port
      + optionalString (v.IsolateDestAddr or false) " IsolateDestAddr"
    else toString v;
  genTorrc = settings: concatStrings (concatLists (mapAttrsToList
    (k: v: map (x: "${k} ${torValue x}\n") (if isList v then v else [ v ]))
    (lib.filterAttrs (_: v: !(v == null || v == "" || v == [ ])) settings)));
in
{
  units = systemd:
    unitsOf "service" service systemd.services
    // unitsOf "socket" socket systemd.sockets
    // unitsOf "timer" timer systemd.timers;

  # The torrc and the files NixOS's tor ExecStartPre writes, for tor's
  # settings after NixOS's own defaults (DataDirectory, SOCKSPort, the
  # client authorization directory).
  tor = cfg:
    let
      runDir = "/run/tor";
      clientAuths = lib.concatLists (mapAttrsToList (onion: o: lib.imap0 (i: file: {
        inherit onion file;
        name = "${lib.removeSuffix ".onion" onion}.${toString i}.auth_private";
      }) o.clientAuthorizations) cfg.client.onionServices);
      settings = {
        DataDirectory = "/var/lib/tor";
        SOCKSPort = if cfg.client.enable then [ cfg.client.socksListenAddress ] else [ 0 ];
        ClientOnionAuthDir = if clientAuths != [ ] then "${runDir}/ClientOnionAuthDir" else null;
      } // cfg.settings;
      onionSettings = o: {
        HiddenServiceVersion = o.version;
        HiddenServicePort = map (p: "${toString p.port} ${torValue p.target}") o.map;
      } // o.settings;
    in
    {
      torrc = genTorrc settings
        + concatStrings (mapAttrsToList (name: o: "HiddenServiceDir ${o.path}\n" + genTorrc (onionSettings o)) cfg.relay.onionServices);
      # <onion dir>/authorized_clients/<i>.auth, holding the public key.
      authorizedClients = lib.concatLists (mapAttrsToList (name: o: lib.imap0 (i: key: {
        path = "${o.path}/authorized_clients/${toString i}.auth";
        content = "${key}\n";
      }) o.authorizedClients) cfg.relay.onionServices);
      # <ClientOnionAuthDir>/<onion>.<i>.auth_private: "<onion>:" + the key file.
      clientAuthorizations = map (a: {
        path = "${runDir}/ClientOnionAuthDir/${a.name}";
        prefix = "${lib.removeSuffix ".onion" a.onion}:";
        inherit (a) file;
      }) clientAuths;
    };
}
