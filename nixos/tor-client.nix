# Reaching a kiss cache's onion service from publish and update (the
# original's publish-tor and update-tor): the local tor client, the onion's
# client authorization key, and a SOCKS proxy in the unit's environment.
# `socks5h` makes the proxy resolve the .onion name (local DNS cannot).
{ lib }:
let
  inherit (lib) mkOption types;
in
{
  options = what: {
    enable = lib.mkEnableOption "reaching the cache through Tor, to ${what}";
    onion = mkOption {
      type = types.str;
      example = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
      description = "The onion address (with the .onion suffix) of the cache's read or write onion service.";
    };
    clientAuthFile = mkOption {
      type = types.nullOr (import ./lib.nix { inherit lib; }).types.secretPath;
      default = null;
      example = "/run/keys/onion-auth";
      description = ''
        File holding this client's private key, "descriptor:x25519:<base32 private key>",
        for an onion service with client authorization. null: a public onion.
      '';
    };
    socksPort = mkOption { example = 9150;
      type = types.port;
      default = 9050;
      description = "Port of the local tor client's SOCKS listener (NixOS's default is 9050).";
    };
  };

  # The configuration for one unit; setUrl sets the module's cache URL
  # (mkDefault, so an explicit one wins).
  config = { what, tor, unit, setUrl }:
    let proxy = "socks5h://127.0.0.1:${toString tor.socksPort}"; in
    lib.mkMerge [
      (setUrl "http://${tor.onion}")
      {
        assertions = [{
          assertion = builtins.match "[a-z2-7]{56}[.]onion" tor.onion != null;
          message = "${what}.tor.onion: '${tor.onion}' is not a v3 onion address (56 base32 characters and .onion).";
        }];
        services.tor = {
          enable = true;
          client.enable = true;
          client.onionServices.${tor.onion}.clientAuthorizations = lib.optional (tor.clientAuthFile != null) tor.clientAuthFile;
        };
        systemd.services.${unit} = {
          after = [ "tor.service" ];
          wants = [ "tor.service" ];
          # curl (Nix, kiss-update) reads ALL_PROXY and http_proxy, Go (kiss
          # with-lock) HTTP_PROXY; loopback (with-lock's own endpoint) stays direct.
          environment = {
            ALL_PROXY = proxy;
            http_proxy = proxy;
            HTTP_PROXY = proxy;
            NO_PROXY = "127.0.0.1,::1,localhost";
            no_proxy = "127.0.0.1,::1,localhost";
          };
        };
      }
    ];
}
