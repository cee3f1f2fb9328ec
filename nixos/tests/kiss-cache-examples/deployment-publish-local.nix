# docs/deployment.md, "Publishing" (on the cache server itself). The
# original shows `systems = [ ... ];`: one system of the example above here.
{
  services.kiss-cache.publish = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    secretKeyFile = "/run/keys/cache-key";
    systems = [ { flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; marker = "web1"; } ];
  };
}
