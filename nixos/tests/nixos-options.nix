# The NixOS options kiss's modules read or define, declared with NixOS's
# types, for evaluating the modules with the real module system
# (lib.evalModules) where nixpkgs' nixos/ tree is not available.
#
# Written for this test harness after NixOS's declarations
# (nixos/lib/systemd-unit-options.nix, nixos/modules/misc/assertions.nix,
# services/web-servers/nginx, services/security/tor.nix, config/users-groups.nix,
# services/networking/firewall.nix): the same option names, types and merge
# behaviour for what kiss uses, nothing more. A definition kiss makes that
# NixOS would reject (a wrong type, an unknown option, conflicting values)
# fails here too; the VM tests in the flake check the rest on real NixOS.
{ lib, ... }:
let
  inherit (lib) mkOption types;

  # NixOS's unitNameType.
  unitName = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  units = mkOption { type = types.listOf unitName; default = [ ]; };

  # NixOS's unitOption: list definitions are concatenated; scalar ones must
  # agree unless one has a higher priority (mkDefault/mkForce).
  unitOption = lib.mkOptionType {
    name = "systemd option";
    merge = loc: defs:
      let defs' = lib.filterOverrides defs; in
      if lib.isList (lib.head defs').value then
        lib.concatMap
          (d: if lib.isList d.value then d.value
          else throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}")
          defs'
      else lib.mergeEqualOption loc defs';
  };
  section = mkOption { type = types.attrsOf unitOption; default = { }; };

  # NixOS's checkService: Type and Restart take known values only.
  checkedService = types.addCheck (types.attrsOf unitOption) (attrs:
    let
      v = n: let x = attrs.${n}; in if (x._type or "") == "override" || (x._type or "") == "if" then x.content else x;
      oneOf = n: values: !(attrs ? ${n}) || lib.elem (v n) values;
    in
    oneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ]
    && oneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "on-watchdog" "always" ]);

  commonUnit = {
    enable = mkOption { type = types.bool; default = true; };
    description = mkOption { type = types.singleLineStr; default = ""; };
    documentation = mkOption { type = types.listOf types.str; default = [ ]; };
    requires = units;
    wants = units;
    after = units;
    before = units;
    bindsTo = units;
    partOf = units;
    conflicts = units;
    requisite = units;
    wantedBy = units;
    requiredBy = units;
    aliases = units;
    onFailure = units;
    unitConfig = section;
    restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
  };

  service = types.submodule ({ name, ... }: {
    options = commonUnit // {
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
      serviceConfig = mkOption { type = checkedService; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      startAt = mkOption { type = types.either types.str (types.listOf types.str); default = [ ]; };
      confinement.enable = mkOption { type = types.bool; default = false; };
    };
  });
  socket = types.submodule {
    options = commonUnit // {
      listenStreams = mkOption { type = types.listOf types.str; default = [ ]; };
      listenDatagrams = mkOption { type = types.listOf types.str; default = [ ]; };
      socketConfig = section;
    };
  };
  timer = types.submodule {
    options = commonUnit // { timerConfig = section; };
  };

  onionPort = types.submodule {
    options = {
      port = mkOption { type = types.nullOr types.port; default = null; };
      target = mkOption {
        default = null;
        type = types.nullOr (types.submodule {
          options = {
            unix = mkOption { type = types.nullOr types.path; default = null; };
            addr = mkOption { type = types.nullOr types.str; default = null; };
            port = mkOption { type = types.nullOr types.port; default = null; };
          };
        });
      };
    };
  };
  torSettings = types.submodule {
    freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.str types.int types.bool (types.listOf types.str) ]));
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      internal = true;
      default = [ ];
    };

    networking.hostName = mkOption { type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$"; default = "nixos"; };
    networking.nameservers = mkOption { type = types.listOf types.str; default = [ ]; };
    networking.firewall.allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };

    nix.settings = mkOption {
      type = types.submodule {
        freeformType = types.attrsOf types.anything;
        options.require-sigs = mkOption { type = types.bool; default = true; };
      };
      default = { };
    };

    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          source = mkOption { type = types.path; };
          text = mkOption { type = types.nullOr types.lines; default = null; };
          mode = mkOption { type = types.str; default = "symlink"; };
          user = mkOption { type = types.str; default = "+0"; };
          group = mkOption { type = types.str; default = "+0"; };
        };
      });
    };
    security.pki.certificateFiles = mkOption { type = types.listOf types.path; default = [ ]; };
    system.extraDependencies = mkOption { type = types.listOf types.pathInStore; default = [ ]; };

    users.users = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          name = mkOption { type = types.str; default = name; };
          isSystemUser = mkOption { type = types.bool; default = false; };
          isNormalUser = mkOption { type = types.bool; default = false; };
          group = mkOption { type = types.str; default = ""; };
          extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
          description = mkOption { type = types.str; default = ""; };
          home = mkOption { type = types.path; default = "/var/empty"; };
          createHome = mkOption { type = types.bool; default = false; };
        };
      }));
    };
    users.groups = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          name = mkOption { type = types.str; default = name; };
          members = mkOption { type = types.listOf types.str; default = [ ]; };
        };
      }));
    };

    systemd.services = mkOption { type = types.attrsOf service; default = { }; };
    systemd.sockets = mkOption { type = types.attrsOf socket; default = { }; };
    systemd.timers = mkOption { type = types.attrsOf timer; default = { }; };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };

    services.nginx = {
      enable = mkOption { type = types.bool; default = false; };
      user = mkOption { type = types.str; default = "nginx"; };
      group = mkOption { type = types.str; default = "nginx"; };
      appendHttpConfig = mkOption { type = types.lines; default = ""; };
      additionalModules = mkOption { type = types.listOf (types.attrsOf types.anything); default = [ ]; };
    };

    services.resolved.enable = mkOption { type = types.bool; default = false; };

    services.tor = {
      enable = mkOption { type = types.bool; default = false; };
      client.enable = mkOption { type = types.bool; default = false; };
      client.socksListenAddress = mkOption {
        type = types.either types.port (types.submodule {
          options.addr = mkOption { type = types.nullOr types.str; default = null; };
          options.port = mkOption { type = types.nullOr types.port; default = null; };
          options.IsolateDestAddr = mkOption { type = types.bool; default = false; };
        });
        default = { addr = "127.0.0.1"; port = 9050; IsolateDestAddr = true; };
      };
      client.onionServices = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options.clientAuthorizations = mkOption { type = types.listOf types.path; default = [ ]; };
        });
      };
      relay.onionServices = mkOption {
        default = { };
        type = types.attrsOf (types.submodule ({ name, config, ... }: {
          options = {
            path = mkOption { type = types.path; };
            secretKey = mkOption { type = types.nullOr types.path; default = null; };
            authorizedClients = mkOption { type = types.listOf types.str; default = [ ]; };
            map = mkOption {
              type = types.listOf (types.oneOf [ types.port onionPort ]);
              apply = map (v: if lib.isInt v then { port = v; target = null; } else v);
            };
            version = mkOption { type = types.nullOr (types.enum [ 2 3 ]); default = null; };
            settings = mkOption { type = torSettings; default = { }; };
          };
          config.path = lib.mkDefault "/var/lib/tor/onion/${name}";
        }));
      };
      settings = mkOption { type = torSettings; default = { }; };
    };
  };
}
