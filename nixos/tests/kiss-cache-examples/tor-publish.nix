# docs/tor.md, the builder. The original's `systems = [ ... ];` and onion
# are placeholders: one system and a real v3 address here.
{
  services.kiss-cache-publish = {
    enable = true;
    systems = [ { flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; marker = "web1"; } ];
  };
  services.kiss-cache-publish-tor = {
    enable = true;
    onion = "3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.onion";
    # File containing this writer's *private* key.
    clientAuthFile = "/run/keys/onion-auth";
  };
}
