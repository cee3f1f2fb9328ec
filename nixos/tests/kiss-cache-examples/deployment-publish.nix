# docs/deployment.md, "Publishing" (services.kiss-cache.publish, remote).
{
  services.kiss-cache.publish = {
    enable = true;
    cacheUrl = "https://cache.example.org";
    schedule = "*-*-* 02:00:00";
    secretKeyFile = "/run/keys/cache-key";
    tlsCertificate = "/etc/ssl/writer.pem";
    tlsPrivateKey = "/etc/ssl/writer.key";
    systems = [
      {
        flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel";
        marker = "web1";
      }
      {
        flakeRef = "github:example/infra#nixosConfigurations.web2.config.system.build.toplevel";
        marker = "web2";
      }
    ];
  };
}
