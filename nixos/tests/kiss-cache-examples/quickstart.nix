# docs/quickstart.md, "3. Deploy the cache".
{
  services.kiss-cache = {
    # Pruner: keep only what a gcroot marker reaches.
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    schedule = "daily";
    # nginx + mTLS front. Holders of a CA-signed client cert
    # can read; only listed CNs can write.
    serve = {
      enable = true;
      cacheDir = "/var/lib/nix-cache";
      hostName = "cache.example.org";
      sslCertificate = "/run/keys/cache.pem";
      sslCertificateKey = "/run/keys/cache.key";
      clientCA = "/run/keys/ca.pem";
      writers = [ "CN=builder-01" ];
    };
  };
}
