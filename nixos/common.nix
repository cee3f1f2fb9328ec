# Options shared by every kiss module: the package, and the system user the
# long-running parts (kiss serve, a file:// cache directory it owns) run as.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.kiss;
in
{
  options.services.kiss = {
    package = lib.mkOption { example = lib.literalExpression "inputs.kiss.packages.\${pkgs.stdenv.hostPlatform.system}.kiss";
      type = lib.types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage \"\${kiss}/package.nix\" { } (the flake's modules: packages.\${system}.kiss)";
      description = "The kiss package.";
    };
    user = lib.mkOption { example = "nix-cache";
      type = lib.types.str;
      default = "kiss";
      description = "System user owning a file:// cache directory and running kiss serve (unless nginx serves the directory: then nginx's user).";
    };
    group = lib.mkOption { example = "nix-cache";
      type = lib.types.str;
      default = "kiss";
      description = "Group of services.kiss.user.";
    };
    userNeededBy = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      internal = true;
      visible = false;
      description = "The modules that run something as services.kiss.user (it is created when this is not empty).";
    };
  };

  config = lib.mkIf (cfg.userNeededBy != [ ]) {
    users.users.${cfg.user} = {
      isSystemUser = true;
      group = cfg.group;
      description = "kiss Nix binary cache";
    };
    users.groups.${cfg.group} = { };
  };
}
