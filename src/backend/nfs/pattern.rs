//! subDir patterns: where on the share a volume's directory goes, e.g.
//! `${pvc.metadata.namespace}/${pvc.metadata.name}`. external-provisioner passes the values as
//! the parameters `csi.storage.k8s.io/pvc/namespace`, `.../pvc/name` and `.../pv/name` when run
//! with `--extra-create-metadata`. Default: `${pv.metadata.name}`.
//!
//! Two different volumes must never get one directory, so expansion is injective:
//! - Values are escaped, never stripped: `%` becomes `%25`, and `/`, NUL, control characters,
//!   a leading `-` (option injection into tools) and a leading `.` (hidden names, `.`/`..`,
//!   the reserved `.ferrovol`) become `%XX`. Escaping with `%` itself escaped is reversible, so
//!   distinct values stay distinct. Unicode passes through as bytes, not normalised: normalising
//!   would map two distinct names (NFC and NFD spellings) to one directory.
//! - The pattern must name the volume: `${pv.metadata.name}` (unique per PV), or both
//!   `${pvc.metadata.namespace}` and `${pvc.metadata.name}`.
//! - One path component holds at most one variable, unless the literal text between two
//!   variables contains `_`: values escape `_` too, so the split point is unambiguous (`-` and
//!   `.` occur inside Kubernetes names and cannot separate values).
//! - Values longer than 253 bytes, and components that end up longer than 255 bytes, are
//!   errors rather than truncated (truncation would merge names).
//! - The result is a relative path of clean components (no empty, `.`, `..`), whose first
//!   component is never `.ferrovol`, and whose last never starts with `archived-` (archive
//!   names live beside volume directories).

use std::collections::BTreeMap;

pub const PARAM_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const PARAM_PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const PARAM_PV_NAME: &str = "csi.storage.k8s.io/pv/name";
pub const DEFAULT_PATTERN: &str = "${pv.metadata.name}";
/// Longest value accepted (a Kubernetes object name is at most 253 bytes).
pub const MAX_VALUE: usize = 253;
const MAX_COMPONENT: usize = 255;
const MAX_PATH: usize = 1024;
const RESERVED_TOP: &str = ".ferrovol";
pub const ARCHIVE_PREFIX: &str = "archived-";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Var {
    PvcNamespace,
    PvcName,
    PvName,
}

/// Each variable's name in patterns and the CreateVolume parameter that carries its value, in
/// the order of `Var`.
const VARS: [(Var, &str, &str); 3] = [
    (
        Var::PvcNamespace,
        "pvc.metadata.namespace",
        PARAM_PVC_NAMESPACE,
    ),
    (Var::PvcName, "pvc.metadata.name", PARAM_PVC_NAME),
    (Var::PvName, "pv.metadata.name", PARAM_PV_NAME),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(Var),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("subDir pattern {pattern:?}: {reason}")]
    Invalid { pattern: String, reason: String },
    #[error("subDir pattern {pattern:?}: unknown variable ${{{var}}} (known: ${{pvc.metadata.namespace}}, ${{pvc.metadata.name}}, ${{pv.metadata.name}})")]
    UnknownVariable { pattern: String, var: String },
    #[error("subDir pattern needs ${{{var}}} but parameter {param} is missing or empty (run external-provisioner with --extra-create-metadata)")]
    MissingValue {
        var: &'static str,
        param: &'static str,
    },
    #[error("value of ${{{var}}} is {len} bytes, more than {MAX_VALUE}")]
    ValueTooLong { var: &'static str, len: usize },
    #[error("subDir {path:?}: {reason}")]
    BadResult { path: String, reason: String },
}

/// A parsed, checked subDir pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    comps: Vec<Vec<Piece>>,
}

/// The values the pattern's variables take for one volume, indexed by `Var`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Values(pub [Option<String>; 3]);

impl Values {
    pub fn from_parameters(params: &BTreeMap<String, String>) -> Values {
        Values(VARS.map(|(_, _, param)| params.get(param).cloned()))
    }

    fn get(&self, v: Var) -> Option<&str> {
        self.0[v as usize].as_deref().filter(|s| !s.is_empty())
    }
}

/// Escapes one value (see the module doc). Injective: `%` is always escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, ch) in value.chars().enumerate() {
        let esc = match ch {
            '%' | '/' | '_' => true,
            c if c.is_control() => true,
            '-' | '.' => i == 0,
            _ => false,
        };
        if esc {
            // Each UTF-8 byte (non-ASCII control characters have several).
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        let invalid = |reason: &str| PatternError::Invalid {
            pattern: pattern.to_string(),
            reason: reason.to_string(),
        };
        if pattern.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut comps = Vec::new();
        for comp in pattern.split('/') {
            let mut pieces = Vec::new();
            let mut rest = comp;
            while let Some(start) = rest.find("${") {
                if start > 0 {
                    pieces.push(Piece::Lit(rest[..start].to_string()));
                }
                let after = &rest[start + 2..];
                let end = after
                    .find('}')
                    .ok_or_else(|| invalid("unterminated ${ (or a '/' inside ${...})"))?;
                let name = &after[..end];
                let var = VARS.iter().find(|v| v.1 == name).map(|v| v.0);
                let var = var.ok_or_else(|| PatternError::UnknownVariable {
                    pattern: pattern.to_string(),
                    var: name.to_string(),
                })?;
                pieces.push(Piece::Var(var));
                rest = &after[end + 1..];
            }
            if !rest.is_empty() {
                pieces.push(Piece::Lit(rest.to_string()));
            }
            if pieces.is_empty() {
                return Err(invalid(
                    "empty path component (leading, trailing or doubled '/')",
                ));
            }
            if matches!(pieces.as_slice(), [Piece::Lit(l)] if l == "." || l == "..") {
                return Err(invalid("'.' and '..' components are not allowed"));
            }
            // Literals never follow literals: two variables are adjacent or one literal apart.
            let unseparated = |w: &[Piece]| match w {
                [Piece::Var(_), Piece::Var(_), ..] => true,
                [Piece::Var(_), Piece::Lit(sep), Piece::Var(_)] => !sep.contains('_'),
                _ => false,
            };
            if pieces.windows(2).chain(pieces.windows(3)).any(unseparated) {
                return Err(invalid(
                    "two variables in one component must be separated by text containing '_' (or put them in separate components)",
                ));
            }
            comps.push(pieces);
        }
        let top = comps.first().map(Vec::as_slice);
        if matches!(top, Some([Piece::Lit(first)]) if first == RESERVED_TOP) {
            return Err(invalid(
                "the top-level directory .ferrovol is reserved for volume records",
            ));
        }
        let uses = |v: Var| comps.iter().flatten().any(|p| *p == Piece::Var(v));
        if !(uses(Var::PvName) || (uses(Var::PvcNamespace) && uses(Var::PvcName))) {
            return Err(invalid(
                "must contain ${pv.metadata.name}, or both ${pvc.metadata.namespace} and ${pvc.metadata.name}, so that two volumes never share a directory",
            ));
        }
        let source = pattern.to_string();
        Ok(Pattern { source, comps })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The volume's directory, relative to the share root.
    pub fn expand(&self, values: &Values) -> Result<String, PatternError> {
        let mut parts = Vec::with_capacity(self.comps.len());
        for comp in &self.comps {
            let mut s = String::new();
            for piece in comp {
                match piece {
                    Piece::Lit(l) => s.push_str(l),
                    Piece::Var(v) => {
                        let (_, var, param) = VARS[*v as usize];
                        let val = values
                            .get(*v)
                            .ok_or(PatternError::MissingValue { var, param })?;
                        if val.len() > MAX_VALUE {
                            let len = val.len();
                            return Err(PatternError::ValueTooLong { var, len });
                        }
                        s.push_str(&escape(val));
                    }
                }
            }
            parts.push(s);
        }
        let path = parts.join("/");
        let bad = |reason: String| PatternError::BadResult {
            path: path.clone(),
            reason,
        };
        if let Some(long) = parts.iter().find(|p| p.len() > MAX_COMPONENT) {
            return Err(bad(format!(
                "component of {} bytes, more than {MAX_COMPONENT}",
                long.len()
            )));
        }
        if path.len() > MAX_PATH {
            return Err(bad(format!("longer than {MAX_PATH} bytes")));
        }
        if parts.last().is_some_and(|l| l.starts_with(ARCHIVE_PREFIX)) {
            return Err(bad(format!(
                "a volume directory may not start with {ARCHIVE_PREFIX:?}, the prefix of archived volumes"
            )));
        }
        Ok(path)
    }
}

impl Default for Pattern {
    fn default() -> Self {
        Pattern::parse(DEFAULT_PATTERN).expect("default pattern is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(ns: &str, name: &str, pv: &str) -> Values {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_string());
        Values([s(ns), s(name), s(pv)])
    }

    fn nested() -> Pattern {
        Pattern::parse("${pvc.metadata.namespace}/${pvc.metadata.name}").unwrap()
    }

    #[test]
    fn default_and_nested_patterns_expand() {
        assert_eq!(
            Pattern::default()
                .expand(&vals("ns", "data", "pvc-1"))
                .unwrap(),
            "pvc-1"
        );
        assert_eq!(nested().expand(&vals("ns", "data", "")).unwrap(), "ns/data");
        let p = Pattern::parse(
            "k8s/${pvc.metadata.namespace}_${pvc.metadata.name}/vol-${pv.metadata.name}",
        )
        .unwrap();
        assert_eq!(
            p.expand(&vals("ns", "db", "pvc-9")).unwrap(),
            "k8s/ns_db/vol-pvc-9"
        );
        let mut params = BTreeMap::new();
        params.insert(PARAM_PV_NAME.to_string(), "pvc-2".to_string());
        assert_eq!(
            Pattern::default()
                .expand(&Values::from_parameters(&params))
                .unwrap(),
            "pvc-2"
        );
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_reason() {
        let e = Pattern::parse("${pvc.metadata.labels.app}/${pv.metadata.name}").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown variable ${pvc.metadata.labels.app}"),
            "{e}"
        );
        for p in [
            "/${pv.metadata.name}",
            "${pv.metadata.name}/",
            "a//${pv.metadata.name}",
            "../${pv.metadata.name}",
            "./${pv.metadata.name}",
            "${pv.metadata.name",
            "${pvc.metadata.namespace}",
            "static",
            "${pvc.metadata.namespace}-${pvc.metadata.name}",
            "${pvc.metadata.namespace}${pvc.metadata.name}",
            ".ferrovol/${pv.metadata.name}",
            "a\0/${pv.metadata.name}",
        ] {
            assert!(Pattern::parse(p).is_err(), "{p:?} accepted");
        }
    }

    #[test]
    fn hostile_values_stay_inside_one_component() {
        let p = nested();
        let cases = [
            ("..", "x", "%2E./x"),
            ("ns", "../..", "ns/%2E.%2F.."),
            ("ns", "/", "ns/%2F"),
            ("ns", "-rf", "ns/%2Drf"),
            ("ns", ".ferrovol", "ns/%2Eferrovol"),
            ("ns", "a\0b", "ns/a%00b"),
            ("ns", "a%2Fb", "ns/a%252Fb"),
            ("ns", "a_b", "ns/a%5Fb"),
            ("ns", "naïve-ü", "ns/naïve-ü"),
            ("ns", "tab\there\u{85}", "ns/tab%09here%C2%85"),
        ];
        for (ns, name, want) in cases {
            let got = p.expand(&vals(ns, name, "")).unwrap();
            assert_eq!(got, want, "{ns:?}/{name:?}");
            assert!(got
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0')));
        }
        let e = Pattern::default()
            .expand(&vals("", "", ".ferrovol"))
            .unwrap();
        assert_eq!(e, "%2Eferrovol");
    }

    #[test]
    fn lengths_are_limited_not_truncated() {
        let p = Pattern::default();
        let n253 = "a".repeat(253);
        assert_eq!(p.expand(&vals("", "", &n253)).unwrap(), n253);
        assert!(matches!(
            p.expand(&vals("", "", &"a".repeat(254))),
            Err(PatternError::ValueTooLong { .. })
        ));
        let dashes = format!("-{}", "%".repeat(100));
        assert!(matches!(
            p.expand(&vals("", "", &dashes)),
            Err(PatternError::BadResult { .. })
        ));
    }

    #[test]
    fn missing_values_name_the_parameter() {
        let e = nested().expand(&vals("ns", "", "pv")).unwrap_err();
        assert!(
            e.to_string().contains(PARAM_PVC_NAME)
                && e.to_string().contains("--extra-create-metadata"),
            "{e}"
        );
    }

    #[test]
    fn archive_prefix_is_reserved_for_the_volume_directory() {
        assert!(nested().expand(&vals("ns", "archived-x", "")).is_err());
        assert_eq!(
            nested().expand(&vals("archived-ns", "x", "")).unwrap(),
            "archived-ns/x"
        );
    }

    #[test]
    fn distinct_inputs_never_share_a_directory() {
        let alphabet = ["a", "_", "%", "/", "-", ".", "5F", "%5F", "ü"];
        let mut words = vec![String::new()];
        for _ in 0..3 {
            let next: Vec<String> = words
                .iter()
                .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                .collect();
            words.extend(next);
        }
        words.retain(|w| !w.is_empty() && w.len() <= 4);
        words.sort();
        words.dedup();
        let p = Pattern::parse("x_${pvc.metadata.namespace}_${pvc.metadata.name}").unwrap();
        let mut seen = std::collections::HashMap::new();
        for ns in &words {
            for name in words.iter().step_by(3) {
                if let Ok(path) = p.expand(&vals(ns, name, "")) {
                    if let Some(prev) = seen.insert(path.clone(), (ns.clone(), name.clone())) {
                        panic!("{prev:?} and {:?} both map to {path}", (ns, name));
                    }
                }
            }
        }
        assert!(seen.len() > 10_000, "{}", seen.len());
    }
}
