# A typical cache host: the fleet reads and pushes over mTLS (nginx backend,
# the original's deployment, with the lease gateway), CI pushes with OIDC
# tokens on a second virtual host on the same port 443 (nginx terminates
# TLS, kiss serve checks the tokens), the same cache is an onion service,
# and the pruner runs daily with marker expiry.
{
  services.kiss.serve = {
    enable = true;
    backend = "nginx";
    cacheDir = "/var/lib/nix-cache";
    hostName = "cache.example.org";
    sslCertificate = "/var/lib/acme/cache.example.org/cert.pem";
    sslCertificateKey = "/var/lib/acme/cache.example.org/key.pem";
    clientCA = "/etc/nix-cache/ca.pem";
    writers = [ "CN=builder-01" "CN=hydra,O=Example" ];
    fallbackCache = "https://cache.nixos.org";
    resolvers = [ "127.0.0.53" ];
    openFirewall = true;
    virtualHosts.ci = {
      backend = "nginx";
      cacheDir = "/var/lib/nix-cache";
      hostName = "ci-cache.example.org";
      sslCertificate = "/var/lib/acme/ci-cache.example.org/cert.pem";
      sslCertificateKey = "/var/lib/acme/ci-cache.example.org/key.pem";
      oidc = {
        audience = "https://ci-cache.example.org";
        readSubjects = [ "repo:example/*" ];
        writeSubjects = [ "repo:example/infra:ref:refs/heads/main" ];
      };
    };
    tor = {
      enable = true;
      readClients = [
        "descriptor:x25519:7L42AX3VANN4US7ZTCLDZRJP2ZRK2WETF5LCB3VFFMPDO4TJPEMQ"
        "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ"
      ];
      writeClients = [ "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ" ];
    };
  };
  services.kiss.prune = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    schedule = "daily";
    rootMaxAge = "30d";
    metricsFile = "/var/lib/prometheus-node-exporter-text/kiss_prune.prom";
  };
}
