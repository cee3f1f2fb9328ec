# All kiss NixOS modules: services.kiss.{prune,serve,publish,update}, Tor
# included, plus the original kiss-cache's option names (./kiss-cache-compat.nix).
# Non-flake use: imports = [ "${kiss}/nixos" ];
{
  imports = [
    ./common.nix
    ./prune.nix
    ./serve.nix
    ./publish.nix
    ./update.nix
    ./kiss-cache-compat.nix
  ];
}
