# VM test: Tor, at the configuration level (no Tor network in a VM test, as
# in the original): the cache's read and write onion services with client
# authorization, each a kiss serve on a unix socket that only tor reaches;
# a client's tor with the onion's authorization key and the SOCKS proxy in
# kiss-update's and kiss-publish's environment.
{ self, pkgs }:
let
  pki = import ./pki.nix { inherit pkgs; };
  common = import ./common.nix { inherit self pkgs pki; };
  # Real x25519 keys and v3 onion addresses (made with openssl and tor).
  key1 = "descriptor:x25519:7L42AX3VANN4US7ZTCLDZRJP2ZRK2WETF5LCB3VFFMPDO4TJPEMQ";
  key2 = "descriptor:x25519:SXQHSDSBDVOBQJGZ4TQMQWDA4KQAINPT7KHSYBNIHQGGUFAKBBEQ";
  onionRead = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion";
  onionWrite = "3zamszw5xnff3ophdn2lu4psrmr7az6blhueg5idcwxvgqzfnq4u6zqd.onion";
in
{
  name = "kiss-tor";
  nodes.cache = { ... }: {
    imports = [ common ];
    services.kiss.serve.tor = {
      enable = true;
      cacheDir = "/var/lib/nix-cache";
      readClients = [ key1 key2 ];
      writeClients = [ key2 ];
    };
    systemd.tmpfiles.rules = [ "d /var/lib/nix-cache 0755 kiss kiss -" ];
  };
  nodes.target = { ... }: {
    imports = [ common ];
    environment.etc."kiss-test/onion-auth".text = "descriptor:x25519:YAZK64QN4MALHXS36ESQNK44KE6NENXALPCENQNTSZIN4IG4HRFA";
    services.kiss.update = { enable = true; tor = { enable = true; onion = onionRead; clientAuthFile = "/etc/kiss-test/onion-auth"; }; };
    services.kiss.publish = {
      enable = true;
      systems = [{ flakeRef = "path:/dev/null"; marker = "target"; }];
      tor = { enable = true; onion = onionWrite; clientAuthFile = "/etc/kiss-test/onion-auth"; };
    };
  };
  testScript = ''
    start_all()
    cache.wait_for_unit("tor.service")
    with subtest("torrc and client authorization on the cache"):
        torrc = cache.succeed("systemctl cat tor.service | grep -o '/nix/store/[^ ]*torrc' | head -1").strip()
        cache.succeed(f"grep -Fx 'HiddenServiceDir /var/lib/tor/onion/kiss-read' {torrc}")
        cache.succeed(f"grep -Fx 'HiddenServicePort 80 unix:/run/kiss-tor/read.sock' {torrc}")
        cache.succeed(f"grep -Fx 'HiddenServicePort 80 unix:/run/kiss-tor/write.sock' {torrc}")
        cache.wait_until_succeeds("test -f /var/lib/tor/onion/kiss-read/hostname")
        cache.succeed("test $(ls /var/lib/tor/onion/kiss-read/authorized_clients | wc -l) = 2")
        cache.succeed("test $(ls /var/lib/tor/onion/kiss-write/authorized_clients | wc -l) = 1")
    with subtest("the read socket reads and refuses writes; the write socket takes a marker"):
        cache.succeed("curl -sf --unix-socket /run/kiss-tor/read.sock http://x/nix-cache-info | grep -F 'StoreDir: /nix/store'")
        cache.fail("curl -sf --unix-socket /run/kiss-tor/read.sock -X PUT --data x http://x/gcroots/m")
        cache.succeed("echo onion >/tmp/m && p=$(nix-store --add /tmp/m) && nix copy --to file:///var/lib/nix-cache $p"
                      " && echo $p | curl -sf --unix-socket /run/kiss-tor/write.sock -X PUT --data-binary @- http://x/gcroots/m")
        cache.succeed("test -s /var/lib/nix-cache/gcroots/m")
    with subtest("the client side: tor's client authorization, the units' SOCKS proxy"):
        target.wait_for_unit("tor.service")
        torrc = target.succeed("systemctl cat tor.service | grep -o '/nix/store/[^ ]*torrc' | head -1").strip()
        target.succeed(f"grep -F ClientOnionAuthDir {torrc}")
        for unit in ["kiss-update", "kiss-publish"]:
            target.succeed(f"systemctl show -p Environment --value {unit}.service | grep -F 'ALL_PROXY=socks5h://127.0.0.1:9050'")
        target.succeed("systemctl cat kiss-update.service | grep -F 'kiss-update switch'")
        target.succeed("grep -F ${onionWrite} $(command -v kiss-publish)")
  '';
}
