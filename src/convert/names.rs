//! The names the converter knows: confd's and consul-template's functions
//! by what they return, and the Go methods it can translate.

use super::parse::{Expr, Pipeline};

/// Functions of confd and consul-template the converter passes through by
/// name; those that return strings print without `print()`.
pub(super) const STRING_FUNCS: &[&str] = &[
    "getv",
    "getenv",
    "base",
    "dir",
    "join",
    "toUpper",
    "toLower",
    "replace",
    "trimSuffix",
    "trimPrefix",
    "datetime",
    "key",
    "keyOrDefault",
    "env",
    "envOrDefault",
    "trimSpace",
    "replaceAll",
    "regexReplaceAll",
    "toJSON",
    "toJSONPretty",
    "toYAML",
    "toTOML",
    "base64Encode",
    "base64Decode",
    "sha256Hex",
    "md5sum",
    "timestamp",
    "file",
    "print",
    "printf",
    "println",
    "indent",
    "toTitle",
    "trim",
    "urlquery",
];

pub(super) const OTHER_FUNCS: &[&str] = &[
    // confd
    "get",
    "gets",
    "getvs",
    "exists",
    "ls",
    "lsdir",
    "split",
    "json",
    "jsonArray",
    "map",
    "contains",
    "lookupIP",
    "lookupIPV4",
    "lookupIPV6",
    "lookupSRV",
    "fileExists",
    "parseBool",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "add",
    "sub",
    "div",
    "mod",
    "mul",
    "seq",
    "atoi",
    // consul-template
    "keyExists",
    "safeLs",
    "tree",
    "safeTree",
    "service",
    "services",
    "node",
    "nodes",
    "secret",
    "secrets",
    "datacenters",
    "byKey",
    "byTag",
    "containsAll",
    "containsAny",
    "containsNone",
    "containsNotAll",
    "explode",
    "in",
    "loop",
    "parseFloat",
    "parseInt",
    "parseJSON",
    "parseUint",
    "parseYAML",
    "regexMatch",
    "splitToMap",
    "subtract",
    "multiply",
    "divide",
    "modulo",
    "minimum",
    "maximum",
    "sockaddr",
];

/// Functions that return lists, whose items a range walks in Jinja as in
/// Go; anything else may be a map, which Go ranges over by value.
const LIST_FUNCS: &[&str] = &[
    "gets",
    "getvs",
    "ls",
    "lsdir",
    "split",
    "seq",
    "jsonArray",
    "reverse",
    "sortByLength",
    "sortKVByLength",
    "tree",
    "safeTree",
    "safeLs",
    "service",
    "services",
    "nodes",
    "datacenters",
    "secrets",
];

/// Whether a pipeline's value is a list for sure: its last command calls
/// one of [`LIST_FUNCS`].
pub(super) fn returns_list(p: &Pipeline) -> bool {
    match p.cmds.last().and_then(|c| c.first()) {
        Some(Expr::Ident(name, _)) => LIST_FUNCS.contains(&name.as_str()),
        Some(Expr::Paren(inner)) if p.cmds.last().is_some_and(|c| c.len() == 1) => {
            returns_list(inner)
        }
        _ => false,
    }
}

/// Whether `e` is confd's `datetime` (a time.Time), possibly through
/// methods that return one.
pub(super) fn is_time(e: &Expr) -> bool {
    match e {
        Expr::Ident(name, _) => name == "datetime",
        Expr::Field(base, m) => matches!(m.as_str(), "UTC" | "Local") && is_time(base),
        Expr::Paren(p) => {
            p.decl.is_empty()
                && matches!(p.cmds.as_slice(), [cmd] if matches!(cmd.as_slice(), [one] if is_time(one)))
        }
        _ => false,
    }
}

/// Where an operand starts, when the parser kept it.
pub(super) fn offset_of(e: &Expr) -> Option<usize> {
    match e {
        Expr::Ident(_, at) => Some(*at),
        Expr::Field(base, _) => offset_of(base),
        _ => None,
    }
}
