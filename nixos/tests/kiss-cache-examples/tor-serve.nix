# docs/tor.md, the cache server. The original's keys are shortened
# placeholders ("F2OBO...", "K7AHQ..."): real keys of the same form here.
{
  services.kiss-cache-serve-tor = {
    enable = true;
    cacheDir = "/var/lib/nix-cache";
    # reader1 and writer1 may read.
    readClients = [
      "descriptor:x25519:7L42AX3VANN4US7ZTCLDZRJP2ZRK2WETF5LCB3VFFMPDO4TJPEMQ"  # reader1
      "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ"  # writer1
    ];
    # Only writer1 may write.
    writeClients = [ "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ" ];
  };
}
