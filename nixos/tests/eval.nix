# Evaluates kiss's NixOS modules with the real module system: nixpkgs'
# lib.evalModules, the NixOS option declarations of ./nixos-options.nix and
# the stand-in packages of ./stub-pkgs.nix. `configuration` is a host's
# configuration module (an attribute set or a function, as in
# configuration.nix); `modules` the kiss modules to import.
#
#   nix-instantiate --eval --strict --json nixos/tests/eval.nix \
#     --arg lib 'import ../shared/nixpkgs-lib/lib' --arg configuration '{ services.kiss.prune = { … }; }'
#
# As in NixOS, failed assertions are reported instead of the system (whose
# evaluation may fail for the same misconfiguration); an option type error,
# an unknown option or conflicting definitions make evaluation fail, with
# the module system's own message.
{ lib
, configuration ? { }
, modules ? [ ../default.nix ]
, hostName ? "host1"
}:
let
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  render = import ./render.nix { inherit lib; };

  eval = lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = pkgs; networking.hostName = lib.mkDefault hostName; }
      { _file = "configuration.nix"; imports = [ configuration ]; }
    ] ++ modules;
  };
  cfg = eval.config;

  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);
  ok = failedAssertions == [ ];

  # kiss's own option values: "<unset>" for an option without a value,
  # a package's name for a package.
  values = opts: lib.mapAttrs
    (_: o:
      if lib.isOption o then
        (if !o.isDefined then "<unset>" else if lib.isDerivation o.value then "<package ${o.value.name}>" else o.value)
      else values o)
    (builtins.removeAttrs opts [ "_module" ]);
  kissValues = values eval.options.services.kiss;

  unitFields = [ "description" "documentation" "requires" "wants" "after" "before" "wantedBy" "aliases" "unitConfig" "restartIfChanged" "environment" "serviceConfig" "listenStreams" "socketConfig" "timerConfig" ];
  units = lib.mapAttrs (_: u: lib.filterAttrs (n: _: lib.elem n unitFields) u);
in
{
  inherit failedAssertions;
  warnings = if ok then cfg.warnings else [ ];
  config = if !ok then null else {
    kiss = kissValues;
    systemd = {
      services = units cfg.systemd.services;
      sockets = units cfg.systemd.sockets;
      timers = units cfg.systemd.timers;
      tmpfiles = cfg.systemd.tmpfiles.rules;
    };
    # Unit files as NixOS writes them (render.nix).
    unitFiles = render.units cfg.systemd;
    nginx = { inherit (cfg.services.nginx) enable appendHttpConfig; };
    tor = {
      inherit (cfg.services.tor) enable;
      client = { inherit (cfg.services.tor.client) enable onionServices; };
      onionServices = cfg.services.tor.relay.onionServices;
    } // lib.optionalAttrs cfg.services.tor.enable (render.tor cfg.services.tor);
    users = lib.mapAttrs (_: u: { inherit (u) isSystemUser group description; }) cfg.users.users;
    groups = builtins.attrNames cfg.users.groups;
    firewall = cfg.networking.firewall.allowedTCPPorts;
    systemPackages = map (p: p.name) cfg.environment.systemPackages;
  };
  # Scripts the modules install (the stub writeShellApplication keeps the text).
  scripts = if !ok then { } else lib.listToAttrs (map (p: { name = p.name; value = p.script; })
    (lib.filter (p: p ? script) cfg.environment.systemPackages));
}
