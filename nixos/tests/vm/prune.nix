# VM test: the prune timer on a file:// cache. The timer is active, the
# original unit name is an alias, and a prune keeps what a marker roots and
# deletes the rest.
{ self, pkgs }:
let
  pki = import ./pki.nix { inherit pkgs; };
in
{
  name = "kiss-prune";
  nodes.cache = { ... }: {
    imports = [ (import ./common.nix { inherit self pkgs pki; }) ];
    services.kiss.prune = {
      enable = true;
      cacheDir = "/var/lib/nix-cache";
      schedule = "daily";
      grace = "0s";
      lockWait = "0s";
    };
    systemd.tmpfiles.rules = [ "d /var/lib/nix-cache 0755 root root -" ];
  };
  testScript = ''
    cache.wait_for_unit("multi-user.target")
    cache.succeed("systemctl is-active kiss-prune.timer")
    cache.succeed("systemctl list-timers --all | grep -F kiss-prune.timer")
    # The original kiss-cache's unit names still work.
    cache.succeed("systemctl cat kiss-cache.service | grep -F 'kiss prune'")

    cache.succeed("echo kept >/tmp/kept && echo garbage >/tmp/garbage")
    kept = cache.succeed("nix-store --add /tmp/kept").strip()
    garbage = cache.succeed("nix-store --add /tmp/garbage").strip()
    cache.succeed(f"nix copy --to file:///var/lib/nix-cache {kept} {garbage}")
    cache.succeed(f"kiss roots add file:///var/lib/nix-cache web1 {kept}")

    def narinfo(path):
        return "/var/lib/nix-cache/" + path.removeprefix("/nix/store/")[:32] + ".narinfo"

    cache.succeed(f"test -f {narinfo(garbage)}")
    cache.systemctl("start kiss-prune.service")
    cache.wait_until_succeeds("systemctl show -p ActiveState --value kiss-prune.service | grep -Fx inactive")
    cache.succeed("systemctl show -p Result --value kiss-prune.service | grep -Fx success")
    cache.succeed(f"test -f {narinfo(kept)}")
    cache.fail(f"test -e {narinfo(garbage)}")
    # Through the alias, too.
    cache.succeed("systemctl start kiss-cache.service")
  '';
}
