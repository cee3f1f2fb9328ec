# services.kiss.serve of the VM tests' cache node: /var/lib/nix-cache for
# host "cache", with the test PKI (./pki.nix via ./common.nix), builder-01
# the writer.
backend: {
  enable = true;
  inherit backend;
  cacheDir = "/var/lib/nix-cache";
  hostName = "cache";
  sslCertificate = "/etc/kiss-test/cache.pem";
  sslCertificateKey = "/etc/kiss-test/cache.key";
  clientCA = "/etc/kiss-test/ca.pem";
  writers = [ "CN=builder-01" ];
  openFirewall = true;
}
