# A small stand-in for nixpkgs' lib, enough to evaluate kiss's NixOS modules
# where nixpkgs is not available (the CI machine). The functions kiss's
# modules use have nixpkgs' semantics for the inputs they get; the module
# system itself is reduced to what nixos/tests/eval.nix needs: options carry
# their defaults and types as data, mkIf/mkMerge/mkDefault are markers that
# eval.nix resolves. It checks shape and generated text, not NixOS semantics.
let
  inherit (builtins) concatStringsSep map filter isList isString isAttrs replaceStrings
    substring stringLength match toJSON head tail length elem attrNames listToAttrs;
  type = name: extra: { _type = "type"; inherit name; } // extra;
in
rec {
  mkOption = o: o // { _type = "option"; };
  mkEnableOption = d: mkOption { type = types.bool; default = false; description = "Whether to enable ${d}."; };
  mkPackageOption = _pkgs: name: o: mkOption ({ type = types.package; description = "The ${name} package to use."; } // o);
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
  mkForce = content: { _type = "override"; priority = 50; inherit content; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  literalMD = text: { _type = "literalMD"; inherit text; };

  types = {
    bool = type "bool" { };
    str = type "str" { };
    nonEmptyStr = type "nonEmptyStr" { };
    lines = type "lines" { };
    path = type "path" { };
    package = type "package" { };
    port = type "port" { };
    int = type "int" { };
    ints = { unsigned = type "unsignedInt" { }; positive = type "positiveInt" { }; };
    listOf = t: type "listOf" { elemType = t; };
    attrsOf = t: type "attrsOf" { elemType = t; };
    nullOr = t: type "nullOr" { elemType = t; };
    enum = values: type "enum" { inherit values; };
    either = a: b: type "either" { left = a; right = b; };
    submodule = m: type "submodule" { options = (if builtins.isFunction m then m { name = "<name>"; } else m).options; };
  };

  optional = c: v: if c then [ v ] else [ ];
  optionals = c: l: if c then l else [ ];
  optionalString = c: s: if c then s else "";
  optionalAttrs = c: a: if c then a else { };
  concatMapStrings = f: l: concatStringsSep "" (map f l);
  concatMapStringsSep = sep: f: l: concatStringsSep sep (map f l);
  concatStringsSep = builtins.concatStringsSep;
  hasPrefix = p: s: substring 0 (stringLength p) s == p;
  hasSuffix = p: s: let ls = stringLength s; lp = stringLength p; in lp <= ls && substring (ls - lp) lp s == p;
  removePrefix = p: s: if hasPrefix p s then substring (stringLength p) (stringLength s) s else s;
  escapeShellArg = a:
    let s = toString a; in
    if match "[[:alnum:],._+:@%/=-]+" s != null then s
    else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  escapeShellArgs = l: concatStringsSep " " (map escapeShellArg l);
  getExe = p: "${p}/bin/${p.meta.mainProgram}";
  getExe' = p: name: "${p}/bin/${name}";
  makeBinPath = l: concatStringsSep ":" (map (p: "${p}/bin") l);
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  nameValuePair = name: value: { inherit name value; };
  listToAttrs = builtins.listToAttrs;
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  unique = l: builtins.foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] l;
  last = l: builtins.elemAt l (length l - 1);
  toInt = s: if match "[0-9]+" s != null then builtins.fromJSON s else throw "toInt: ${s}";
  splitString = sep: s: filter isString (builtins.split (replaceStrings [ "." "[" "]" "*" "+" "?" "(" ")" "|" "^" "$" "\\" ] [ "\\." "\\[" "\\]" "\\*" "\\+" "\\?" "\\(" "\\)" "\\|" "\\^" "\\$" "\\\\" ] sep) s);
  concatMap = f: l: builtins.concatMap f l;
  # Merges option declaration trees (the stub's stand-in for the module
  # system collecting `options` from every module).
  recursiveUpdateOpts = a: b:
    a // builtins.mapAttrs (n: v: if a ? ${n} && isAttrs v && (v._type or null) != "option" then recursiveUpdateOpts a.${n} v else v) b;
  toUpper = replaceStrings
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ]
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
}
