# A builder publishing two hosts' systems through the mTLS cache.
{
  services.kiss.publish = {
    enable = true;
    store = "https://cache.example.org";
    schedule = "*-*-* 02:00:00";
    secretKeyFile = "/run/keys/cache-key";
    tlsCertificate = "/etc/ssl/writer.pem";
    tlsPrivateKey = "/run/keys/writer.key";
    tlsCACertificate = "/etc/nix-cache/ca.pem";
    systems = [
      { flakeRef = "github:example/infra#nixosConfigurations.web1.config.system.build.toplevel"; marker = "web1"; }
      { flakeRef = "github:example/infra#nixosConfigurations.web2.config.system.build.toplevel"; marker = "web2"; }
    ];
  };
}
