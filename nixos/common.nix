# Options shared by every kiss module: the package, and the system user the
# long-running parts (kiss serve, the file:// cache directory) run as.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss;
in
{
  options.services.kiss = {
    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage \"\${kiss}/package.nix\" { }";
      description = "The kiss package (the flake's packages.<system>.kiss).";
    };
    user = lib.mkOption {
      type = lib.types.str;
      default = "kiss";
      description = "System user owning a file:// cache directory and running kiss serve.";
    };
    group = lib.mkOption {
      type = lib.types.str;
      default = "kiss";
      description = "Group of services.kiss.user.";
    };
  };

  # Each module can be imported alone (flake nixosModules.prune, …), so the
  # others' options may be missing here.
  config = lib.mkIf ((cfg.serve.enable or false) && (cfg.serve.backend or "") == "kiss"
    || (cfg.prune.enable or false) && (cfg.prune.user or "") == cfg.user) {
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      description = "kiss Nix binary cache";
    };
    users.groups.${cfg.group} = { };
  };
}
