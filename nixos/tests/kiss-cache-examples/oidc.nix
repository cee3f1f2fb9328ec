# docs/oidc.md, "Cache server".
{
  services.kiss-cache.serve-oidc = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    hostName = "cache.example.org";
    sslCertificate = "/etc/ssl/cache.pem";
    sslCertificateKey = "/etc/ssl/cache.key";
    audience = "https://cache.example.org";
    readSubjects = [ "repo:example/*" ];
    writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ];
  };
}
