# Evaluates kiss's NixOS modules without nixpkgs: a reduced module system over
# ./stub-lib.nix. `settings` are the services.kiss values a host sets, `host`
# the rest of its configuration the modules read (networking.hostName,
# nix.settings). Option defaults fill services.kiss; each module's config is
# then resolved (mkIf/mkMerge/mkDefault) and merged. Cross-module writes into
# services.kiss.* are not supported here, and kiss's modules make none.
# Run: nix-instantiate --eval --strict --json eval.nix --arg settings '{…}'
{ settings ? { }
, host ? { networking.hostName = "host1"; }
, modules ? [ ../common.nix ../prune.nix ../serve.nix ../publish.nix ../update.nix ]
}:
let
  lib = import ./stub-lib.nix;
  pkgs = import ./stub-pkgs.nix;
  inherit (builtins) isAttrs isList attrNames foldl' listToAttrs concatMap elem;

  isOption = v: isAttrs v && (v._type or null) == "option";
  isDrvLike = v: isAttrs v && v ? outPath;

  # Fill option declarations with a value tree: given values, else defaults;
  # an option without either throws only when it is read (like NixOS).
  fill = path: opts: vals:
    listToAttrs (map
      (n:
        let
          o = opts.${n};
          p = "${path}.${n}";
        in
        {
          name = n;
          value =
            if isOption o then fillValue p o.type (if vals ? ${n} then vals.${n} else if o ? default then o.default else throw "option ${p} is used but not defined")
            else fill p o (vals.${n} or { });
        })
      (attrNames opts))
    // checkUnknown path opts vals;

  # Setting an option that no module declares is an error, as in NixOS.
  checkUnknown = path: opts: vals:
    foldl' (acc: n: if opts ? ${n} then acc else throw "the option ${path}.${n} does not exist") { } (attrNames vals);

  fillValue = p: t: v:
    if v == null then null
    else if t.name == "submodule" then fill p t.options v
    else if t.name == "nullOr" then fillValue p t.elemType v
    else if t.name == "listOf" then map (fillValue p t.elemType) v
    else if t.name == "enum" then (if elem v t.values then v else throw "${p}: ${builtins.toJSON v} is not one of ${builtins.toJSON t.values}")
    else v;

  # Declared options of all modules, merged (they are disjoint for kiss).
  declared = foldl' (a: m: lib.recursiveUpdateOpts a (m.options or { })) { } evaluated;

  kissCfg = fill "services.kiss" declared.services.kiss (settings);
  config = host // { services = (host.services or { }) // { kiss = kissCfg; }; };

  evaluated = map (m: let f = import m; in if builtins.isFunction f then f { inherit config lib pkgs; } else f) modules;

  resolve = v:
    if isAttrs v && (v._type or null) == "if" then (if v.condition then resolve v.content else { })
    else if isAttrs v && (v._type or null) == "merge" then mergeAll (map resolve v.contents)
    else if isAttrs v && (v._type or null) == "override" then resolve v.content
    else if isAttrs v && !(isDrvLike v) then builtins.mapAttrs (_: resolve) v
    else v;

  merge2 = path: a: b:
    if isAttrs a && isAttrs b && !(isDrvLike a) && !(isDrvLike b) then
      listToAttrs (map
        (n: {
          name = n;
          value =
            if a ? ${n} && b ? ${n} then merge2 "${path}.${n}" a.${n} b.${n}
            else if a ? ${n} then a.${n} else b.${n};
        })
        (lib.unique (attrNames a ++ attrNames b)))
    else if isList a && isList b then a ++ b
    else if a == b then a
    else throw "conflicting definitions for ${path}";
  mergeAll = foldl' (merge2 "config") { };

  result = mergeAll (map (m: resolve (m.config or { })) evaluated);
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) (result.assertions or [ ]));
in
{
  # As in NixOS, failed assertions are reported instead of the system (whose
  # evaluation may throw for the same misconfiguration).
  config = if failedAssertions != [ ] then null else builtins.removeAttrs result [ "assertions" ];
  inherit failedAssertions;
  warnings = if failedAssertions != [ ] then [ ] else result.warnings or [ ];
  # Scripts the modules install (stub writeShellApplication keeps the text).
  scripts = if failedAssertions != [ ] then { } else listToAttrs (map (p: { name = p.name; value = p.script; })
    (builtins.filter (p: p ? script) (result.environment.systemPackages or [ ])));
  options = builtins.attrNames declared.services.kiss;
  optionNames = builtins.mapAttrs (_: o: if isOption o then "option" else builtins.attrNames o) declared.services.kiss;
}
