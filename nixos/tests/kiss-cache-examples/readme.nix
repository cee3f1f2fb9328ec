# README.md, "NixOS modules" (the module list of the flake skeleton), with
# the two one-line settings the README shows after it.
{
  services.kiss-cache-serve = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    hostName = "cache.example.org";
    sslCertificate = "/etc/ssl/cache.pem";
    sslCertificateKey = "/etc/ssl/cache.key";
    clientCA = "/etc/ssl/clients-ca.pem";
    writers = [ "CN=builder-01" ];
  };
  services.kiss-cache = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    schedule = "daily";
  };
  services.kiss-cache-serve.gcRootMaxAge = "30d";
  services.kiss-cache-serve.fallbackCache = "https://cache.nixos.org";
}
