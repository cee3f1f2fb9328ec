# The kiss binary. Non-flake use: pkgs.callPackage "${kiss}/package.nix" { }.
#
# vendorHash is the hash of the Go module download for go.mod/go.sum, made as
# nixpkgs makes it with proxyVendor = true: `go mod download` into a fresh
# GOPATH, cache/download/sumdb removed, the NAR hash of cache/download.
# proxyVendor because the hash then covers the module zips exactly as the
# proxy serves them (the same for every platform and Go version), while
# `go mod vendor` output depends on build tags and on what the toolchain
# prunes. The test suite recomputes it (nixos/vendorhash_test.go,
# TestVendorHash) and, when go.sum changed, fails printing the line to put
# here.
{ lib
, buildGoModule
, go_1_26 ? null
}:
let
  # go.mod says go 1.26.x; use nixpkgs' 1.26 toolchain when the default is older.
  builder = if go_1_26 != null then buildGoModule.override { go = go_1_26; } else buildGoModule;

  # The one place the version is written; stamped into the binary below.
  version = lib.fileContents ./VERSION;
in
builder {
  pname = "kiss";
  inherit version;

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

  vendorHash = "sha256-x+rzwBuB4A+0MhCRNKsdUeyuXRKAMGvwgQePIO6GR6Q=";
  proxyVendor = true;
  subPackages = [ "cmd/kiss" ];
  env.CGO_ENABLED = 0;
  ldflags = [ "-s" "-w" "-X main.version=${version}" ];

  # The test suite starts real nix, nginx and versitygw processes; it runs in
  # CI (scripts/test.sh), not in the Nix sandbox.
  doCheck = false;

  # Shell completions and a man page go here once kiss can generate them
  # (nativeBuildInputs = [ installShellFiles ]; postInstall running
  # `$out/bin/kiss completion …` guarded by stdenv.buildPlatform.canExecute).

  meta = {
    description = "Self-hosted Nix binary cache toolkit: pruner, GC-root registry, lease locks and gateway over file:// or s3://";
    homepage = "https://github.com/kiss-cache/kiss";
    license = lib.licenses.mit;
    mainProgram = "kiss";
    platforms = lib.platforms.unix;
  };
}
