# The option reference of docs/nixos.md, generated from the modules with
# nixpkgs' lib (optionAttrSetToDocList): every visible services.kiss option
# with its type, default, example and description. The options of
# services.kiss.serve.virtualHosts.<name> repeat services.kiss.serve's and
# are listed once, there. nixos/options_doc_test.go checks docs/nixos.md
# against this (KISS_UPDATE_DOCS=1 rewrites it).
#   nix-instantiate --eval --strict --json options-doc.nix --arg lib 'import …/lib'
{ lib }:
let
  eval = lib.evalModules {
    modules = [
      ./nixos-options.nix
      { _module.args.pkgs = import ./stub-pkgs.nix { inherit lib; }; }
      ../default.nix
    ];
  };
  vhostPrefix = "services.kiss.serve.virtualHosts.<name>.";
  docs = lib.filter
    (o: o.visible && !o.internal && lib.hasPrefix "services.kiss." o.name
      && (!lib.hasPrefix vhostPrefix o.name || o.name == vhostPrefix + "enable"))
    (lib.optionAttrSetToDocList eval.options);

  # Defaults and examples are literalExpression/literalMD values here.
  show = v:
    if v ? _type && v._type == "literalExpression" then v.text
    else if v ? _type && v._type == "literalMD" then v.text
    else builtins.toJSON v;
  code = s:
    if lib.hasInfix "\n" s then "\n\n  ```nix\n" + lib.concatMapStrings (l: "  ${l}\n") (lib.splitString "\n" (lib.removeSuffix "\n" s)) + "  ```"
    else " `${s}`";
  oneLine = s: lib.concatStringsSep " " (lib.filter (l: l != "") (map lib.trim (lib.splitString "\n" s)));

  entry = o:
    "### `${o.name}`\n\n"
    + oneLine (o.description or "") + "\n\n"
    + "- Type: ${o.type}\n"
    + (if o ? default then "- Default:${code (show o.default)}\n" else "- Default: none (required)\n")
    + lib.optionalString (o ? example) "- Example:${code (show o.example)}\n"
    + lib.optionalString (o.readOnly or false) "- Read-only\n";
in
lib.concatMapStringsSep "\n" entry docs
