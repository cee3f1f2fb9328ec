# The kiss binary. Non-flake use: pkgs.callPackage "${kiss}/package.nix" { }.
#
# vendorHash: the hash of the Go module download for go.mod/go.sum (proxyVendor,
# so it covers the module cache, not a vendor/ directory). It cannot be
# computed on the machine this repository is developed on (no nixpkgs there),
# so it is a placeholder until the first build on a machine with nixpkgs:
#   nix build .#kiss        # fails with "hash mismatch … got: sha256-…"
#   put the "got:" value below, build again. It changes whenever go.sum does.
# See docs/nixos.md ("Building the package").
{ lib
, buildGoModule
, go_1_26 ? null
, vendorHash ? lib.fakeHash
}:
let
  # go.mod says go 1.26.x; use nixpkgs' 1.26 toolchain when the default is older.
  builder = if go_1_26 != null then buildGoModule.override { go = go_1_26; } else buildGoModule;
in
builder {
  pname = "kiss";
  version = "0.1.0-dev";

  # Only what the Go build reads: a change to docs, NixOS modules or
  # Terraform does not rebuild the binary.
  src = lib.cleanSourceWith {
    src = ./.;
    filter = path: type:
      let rel = lib.removePrefix (toString ./. + "/") (toString path); in
      !(lib.any (p: rel == p || lib.hasPrefix (p + "/") rel) [ "nixos" "terraform" "docs" ".ci" ".git" "result" ])
      && (type == "directory" || lib.hasSuffix ".go" rel || rel == "go.mod" || rel == "go.sum"
          || lib.hasInfix "/testdata/" ("/" + rel));
  };

  inherit vendorHash;
  proxyVendor = true;
  subPackages = [ "cmd/kiss" ];
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" ];

  # The test suite starts real nix, nginx and versitygw processes; it runs in
  # CI (scripts/test.sh), not in the Nix sandbox.
  doCheck = false;

  meta = {
    description = "Self-hosted Nix binary cache toolkit: pruner, GC-root registry, lease locks and gateway over file:// or s3://";
    homepage = "https://github.com/kiss-cache/kiss";
    license = lib.licenses.mit;
    mainProgram = "kiss";
    platforms = lib.platforms.unix;
  };
}
