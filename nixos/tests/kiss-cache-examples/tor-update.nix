# docs/tor.md, the reader. The original's onion is a placeholder
# ("<contents of kiss-cache-read/hostname>"): a real v3 address here.
{
  services.kiss-cache-update.enable = true;
  services.kiss-cache-update-tor = {
    enable = true;
    onion = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
    # File containing reader1's *private* key:
    #   descriptor:x25519:MG6XS...
    clientAuthFile = "/run/keys/onion-auth";
  };
}
