# A host following its marker, rebooting (with kexec) for a new kernel.
{
  networking.hostName = "web1";
  services.kiss.update = {
    enable = true;
    cacheUrl = "https://cache.example.org";
    tlsCertificate = "/etc/ssl/reader.pem";
    tlsPrivateKey = "/run/keys/reader.key";
    tlsCACertificate = "/etc/nix-cache/ca.pem";
    onBootChange = "reboot";
    kexec = true;
  };
}
