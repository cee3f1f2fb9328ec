# The original's NixOS VM test (nixos/test.nix): the cache node's pruner,
# with marker directories of its own and lockWait in seconds, beside serve.
{
  services.kiss-cache = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    gcRoots = [ "/var/lib/nix-cache-roots" "/var/lib/nix-cache/gcroots" ];
    lockWait = 600;
    serve = {
      enable = true;
      cacheDir = "/var/lib/nix-cache";
      hostName = "cache";
      sslCertificate = "/run/test-certs/server.pem";
      sslCertificateKey = "/run/test-certs/server.key";
      clientCA = "/run/test-certs/ca.pem";
      writers = [ "CN=writer" ];
      fallbackCache = "http://upstream";
      gcRootMaxAge = "7d";
    };
  };
}
