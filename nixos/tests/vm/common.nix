# What every VM test node shares: kiss's modules with the flake's package,
# Nix without network substituters, the test CA trusted, and keys copied to
# /etc/kiss-test (mode 0600, root: as a host's secrets would be).
{ self, pkgs, pki }:
{ lib, ... }: {
  imports = [ self.nixosModules.default ];
  nix.settings = {
    experimental-features = [ "nix-command" "flakes" ];
    substituters = lib.mkForce [ ];
  };
  security.pki.certificateFiles = [ "${pki}/ca.pem" ];
  environment.systemPackages = [ self.packages.${pkgs.stdenv.hostPlatform.system}.kiss pkgs.curl ];
  environment.etc = lib.genAttrs
    (map (f: "kiss-test/${f}") [ "cache.pem" "cache.key" "ca.pem" "builder-01.pem" "builder-01.key" "reader.pem" "reader.key" "twocn.pem" "twocn.key" ])
    (f: { source = "${pki}/${lib.removePrefix "kiss-test/" f}"; mode = "0600"; });
}
