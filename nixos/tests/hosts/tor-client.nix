# A host that follows its marker and publishes over Tor (the onions of
# cache.nix), with client authorization keys.
{
  services.kiss.update = {
    enable = true;
    tor = {
      enable = true;
      onion = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
      clientAuthFile = "/run/keys/onion-read-auth";
    };
  };
  services.kiss.publish = {
    enable = true;
    systems = [{ flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; marker = "web1"; }];
    tor = {
      enable = true;
      onion = "3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.onion";
      clientAuthFile = "/run/keys/onion-write-auth";
    };
  };
}
