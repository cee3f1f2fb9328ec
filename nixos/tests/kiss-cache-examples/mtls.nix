# docs/mtls.md, "Client certificates" (on top of the quick start's cache).
{
  imports = [ ./quickstart.nix ];
  services.kiss-cache.serve.writers = [ "CN=builder-01" ];
}
