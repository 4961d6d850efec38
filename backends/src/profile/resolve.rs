//! From files to one profile: parse each file (refusing unknown keys and wrong types with their
//! place), follow `extends` (built-in names, or files relative to the extending file; cycles and
//! unknown names refused), and merge each child over its parent key by key.
//!
//! Merging works on the YAML trees: a mapping merges into the parent's mapping entry by entry
//! (so `ops.supported.Conv: {max_rank: 4}` changes one limit of Conv and keeps the others),
//! anything else replaces the parent's value (lists too), and `null` unsets an optional key.
//! `ops.drop: [If]` removes inherited ops, since merging alone can only add.

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::builtin;
use super::error::{Location, ProfileError};
use super::locate::{locate, KeyPath, Seg};
use super::names::{closest, did_you_mean};
use super::schema::Profile;

/// Longest `extends` chain followed (a guard against runaway chains, not a design limit).
pub const MAX_EXTENDS_DEPTH: usize = 16;

/// One profile file: its text, its YAML tree, and where it came from.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The name errors use: the path as given, or `builtin:NAME`.
    pub file: String,
    /// The file's text.
    pub text: String,
    /// The parsed tree (a mapping; an empty file is an empty mapping).
    pub value: Value,
    /// Identity for cycle detection (canonical path, or `builtin:NAME`).
    id: String,
    /// The folder relative `extends` paths start from; `None` for built-ins and text.
    dir: Option<PathBuf>,
    /// A built-in profile (which may only extend built-ins).
    builtin: bool,
}

impl Layer {
    /// A built-in profile's layer.
    pub fn builtin(name: &str) -> Option<Result<Layer, ProfileError>> {
        let text = builtin::get(name)?;
        let file = format!("builtin:{name}");
        Some(parse(file.clone(), text.to_string(), file, None, true))
    }

    /// A file's layer; relative `extends` start from its folder.
    pub fn file(path: &Path) -> Result<Layer, ProfileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read {
            file: super::error::one_line(&file),
            reason: format!("cannot read: {e}"),
        })?;
        let id = std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| file.clone());
        let dir = path.parent().map(Path::to_path_buf);
        parse(file, text, id, Some(dir.unwrap_or_default()), false)
    }

    /// Text that is not a file (tests, fuzzing): it may extend built-ins only.
    pub fn text(text: &str, file: &str) -> Result<Layer, ProfileError> {
        parse(
            file.to_string(),
            text.to_string(),
            file.to_string(),
            None,
            false,
        )
    }

    /// The location of `path` in this file (line 0 when it is not there).
    pub fn at(&self, path: &KeyPath) -> Location {
        let (line, column) = locate(&self.text, path).unwrap_or((0, 0));
        Location {
            file: self.file.clone(),
            line,
            column,
        }
    }

    /// The `extends` value, when there is one.
    fn extends(&self) -> Option<&str> {
        self.value.get("extends").and_then(Value::as_str)
    }

    /// The profile name a file without `name:` gets: its stem.
    fn stem(&self) -> String {
        let f = self.file.strip_prefix("builtin:").unwrap_or(&self.file);
        Path::new(f)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| f.to_string())
    }
}

/// Parses one file: the typed parse refuses unknown keys and wrong types where they are; the
/// tree is what gets merged.
fn parse(
    file: String,
    text: String,
    id: String,
    dir: Option<PathBuf>,
    builtin: bool,
) -> Result<Layer, ProfileError> {
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(&file, &text, &e))?;
    let value = match untag(value) {
        // An empty file (or one with only comments) is an empty profile.
        Value::Null => Value::Mapping(Mapping::new()),
        v => {
            serde_yaml_ng::from_str::<Profile>(&text).map_err(|e| yaml_error(&file, &text, &e))?;
            v
        }
    };
    Ok(Layer {
        file,
        text,
        value,
        id,
        dir,
        builtin,
    })
}

/// `v` without YAML tags (`!tag value`): profiles give tags no meaning, and the typed parse
/// ignores them, so merging must too.
fn untag(v: Value) -> Value {
    match v {
        Value::Tagged(t) => untag(t.value),
        Value::Mapping(m) => {
            Value::Mapping(m.into_iter().map(|(k, v)| (untag(k), untag(v))).collect())
        }
        Value::Sequence(s) => Value::Sequence(s.into_iter().map(untag).collect()),
        other => other,
    }
}

/// The layers of a profile, leaf first; locates keys in whichever file set them.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Leaf first, root last.
    pub layers: Vec<Layer>,
}

impl Sources {
    /// Where `path` was set: the most derived file that has it (or, for a value that came from
    /// a default, the nearest enclosing key that a file has; line 1 of the leaf otherwise).
    pub fn at(&self, path: &KeyPath) -> Location {
        for len in (1..=path.0.len()).rev() {
            let prefix = KeyPath(path.0[..len].to_vec());
            for layer in &self.layers {
                if has_path(&layer.value, &prefix) {
                    let at = layer.at(&prefix);
                    if at.line > 0 {
                        return at;
                    }
                }
            }
        }
        let leaf = &self.layers[0];
        Location {
            file: leaf.file.clone(),
            line: 1,
            column: 1,
        }
    }

    /// How derived the file that sets `path` is: 0 for the leaf, `None` when only a default
    /// gives it.
    pub fn depth(&self, path: &KeyPath) -> Option<usize> {
        self.layers.iter().position(|l| has_path(&l.value, path))
    }

    /// The files, leaf first.
    pub fn files(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.file.clone()).collect()
    }
}

fn has_path(value: &Value, path: &KeyPath) -> bool {
    let mut v = value;
    for seg in &path.0 {
        let next = match seg {
            Seg::Key(k) => v.as_mapping().and_then(|m| m.get(k.as_str())),
            Seg::Index(i) => v.as_sequence().and_then(|s| s.get(*i)),
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    true
}

/// Follows `extends` from `leaf` and merges the chain into one profile.
pub fn resolve(leaf: Layer) -> Result<(Profile, Sources), ProfileError> {
    let mut layers = vec![leaf];
    while let Some(ext) = layers.last().and_then(Layer::extends).map(str::to_string) {
        let child = layers.last().expect("the chain starts with the leaf");
        let at = child.at(&KeyPath::keys(&["extends"]));
        if layers.len() > MAX_EXTENDS_DEPTH {
            return Err(ProfileError::invalid(
                at,
                "extends",
                format!("chain longer than {MAX_EXTENDS_DEPTH} profiles"),
            ));
        }
        let parent = load_parent(child, &ext, &at)?;
        if let Some(first) = layers.iter().position(|l| l.id == parent.id) {
            let mut cycle: Vec<&str> = layers[first..].iter().map(|l| l.file.as_str()).collect();
            cycle.push(&parent.file);
            return Err(ProfileError::invalid(
                at,
                "extends",
                format!("cycle: {}", cycle.join(" → ")),
            ));
        }
        layers.push(parent);
    }
    let sources = Sources { layers };
    let mut merged = Value::Mapping(Mapping::new());
    for layer in sources.layers.iter().rev() {
        merged = merge(merged, layer.value.clone());
        apply_drop(&mut merged, layer)?;
    }
    let leaf = &sources.layers[0];
    let Value::Mapping(map) = &mut merged else {
        return Err(ProfileError::invalid(
            sources.at(&KeyPath::default()),
            "",
            "a profile is a mapping of keys",
        ));
    };
    map.remove("extends");
    if !map.contains_key("family") {
        return Err(ProfileError::invalid(
            Location {
                file: leaf.file.clone(),
                line: 1,
                column: 1,
            },
            "family",
            "missing: name the target family (edgetpu, hexagon, ane, neon, cpu) or extend a profile",
        ));
    }
    if leaf.value.get("name").is_none() {
        map.insert("name".into(), Value::String(leaf.stem()));
    }
    // Through text, not `from_value`: the typed parse of each file read its text, and a YAML
    // tree deserializes a few scalars differently (an empty value is a null, not "").
    let text = serde_yaml_ng::to_string(&merged)
        .map_err(|e| ProfileError::invalid(sources.at(&KeyPath::default()), "", e.to_string()))?;
    let profile: Profile =
        serde_yaml_ng::from_str(&text).map_err(|e| match yaml_error(&leaf.file, &text, &e) {
            ProfileError::Invalid { key, message, .. } => {
                let at = sources.at(&KeyPath::parse(&key));
                ProfileError::invalid(at, key, message)
            }
            other => other,
        })?;
    Ok((profile, sources))
}

/// The parent `child` extends: a built-in name, or a file relative to the child's folder.
fn load_parent(child: &Layer, ext: &str, at: &Location) -> Result<Layer, ProfileError> {
    let invalid = |msg: String| ProfileError::invalid(at.clone(), "extends", msg);
    if !is_path_like(ext) {
        return match Layer::builtin(ext) {
            Some(layer) => layer,
            None => {
                let hint = did_you_mean(closest(ext, builtin::names()));
                Err(invalid(format!(
                    "unknown profile '{ext}' (built-ins: {}){hint}; a file is named with its \
                     .yaml extension",
                    builtin::names().collect::<Vec<_>>().join(", ")
                )))
            }
        };
    }
    if child.builtin {
        return Err(invalid("a built-in profile extends only built-ins".into()));
    }
    let Some(dir) = &child.dir else {
        return Err(invalid(format!(
            "'{ext}' is a file, but a profile given as text may extend only built-ins"
        )));
    };
    let path = dir.join(ext);
    Layer::file(&path).map_err(|e| match e {
        ProfileError::Read { file, reason } => invalid(format!("{file}: {reason}")),
        other => other,
    })
}

/// A file name rather than a built-in name.
fn is_path_like(s: &str) -> bool {
    s.contains('/')
        || s.contains('\\')
        || s.starts_with('.')
        || s.ends_with(".yaml")
        || s.ends_with(".yml")
}

/// `over` merged onto `base`: mappings entry by entry, anything else replaced.
pub fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            for (k, v) in o {
                let merged = match b.remove(&k) {
                    Some(old) => merge(old, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Mapping(b)
        }
        (_, o) => o,
    }
}

/// Applies `ops.drop` of the layer just merged: removes those ops from `ops.supported`.
fn apply_drop(merged: &mut Value, layer: &Layer) -> Result<(), ProfileError> {
    let Some(ops) = merged.get_mut("ops").and_then(Value::as_mapping_mut) else {
        return Ok(());
    };
    let Some(Value::Sequence(drop)) = ops.remove("drop") else {
        return Ok(());
    };
    let mut supported = match ops.remove("supported") {
        Some(Value::Mapping(m)) => m,
        _ => Mapping::new(),
    };
    for (i, op) in drop.iter().enumerate() {
        let name = op.as_str().unwrap_or_default();
        if supported.remove(name).is_none() {
            let known: Vec<&str> = supported.keys().filter_map(Value::as_str).collect();
            let hint = did_you_mean(closest(name, known.iter().copied()));
            return Err(ProfileError::invalid(
                layer.at(&KeyPath::keys(&["ops", "drop"]).index(i)),
                format!("ops.drop[{i}]"),
                format!("'{name}' is not in the supported set this profile inherits{hint}"),
            ));
        }
    }
    ops.insert("supported".into(), Value::Mapping(supported));
    Ok(())
}

/// A YAML error in `text` as a located profile error: the key from the parser's path, and a
/// shorter message with the nearest valid name for an unknown key or value.
pub fn yaml_error(file: &str, text: &str, e: &serde_yaml_ng::Error) -> ProfileError {
    let (line, column) = e
        .location()
        .map_or((0, 0), |l| within_text(text, l.line(), l.column()));
    let text = strip_location(&e.to_string());
    // serde_yaml_ng writes `path: message` when the error is inside a mapping.
    let (path, message) = match text.split_once(": ") {
        Some((p, m)) if !p.is_empty() && !p.contains(' ') && !p.contains('"') => {
            (p.to_string(), m.to_string())
        }
        _ => (String::new(), text.clone()),
    };
    let (key, message) = explain(&path, &message);
    ProfileError::invalid(
        Location {
            file: file.to_string(),
            line,
            column,
        },
        key,
        message,
    )
}

/// Rewrites serde's unknown-field and unknown-variant messages into one with a suggestion.
fn explain(path: &str, message: &str) -> (String, String) {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let join = |parent: &str, k: &str| {
        if parent.is_empty() {
            k.to_string()
        } else {
            format!("{parent}.{k}")
        }
    };
    if let (true, Some((name, expected))) =
        (message.starts_with("unknown field"), quoted.split_first())
    {
        let hint = did_you_mean(closest(name, expected.iter().copied()));
        let known = if expected.is_empty() {
            "it has no keys".to_string()
        } else {
            format!("known keys: {}", expected.join(", "))
        };
        return (join(path, name), format!("unknown key{hint} ({known})"));
    }
    if let (true, Some((name, expected))) =
        (message.starts_with("unknown variant"), quoted.split_first())
    {
        let hint = did_you_mean(closest(name, expected.iter().copied()));
        return (
            path.to_string(),
            format!(
                "unknown value '{name}'{hint} (expected one of: {})",
                expected.join(", ")
            ),
        );
    }
    (path.to_string(), message.to_string())
}

/// libyaml puts the end of a stream on a line of its own, past the last line of a file that
/// does not end with a line break; such a position becomes the end of the last line.
fn within_text(text: &str, line: usize, column: usize) -> (usize, usize) {
    let lines = yaml_lines(text);
    if line <= lines.len().max(1) {
        return (line, column);
    }
    let last = lines.last().map_or(0, |l| l.chars().count());
    (lines.len(), last + 1)
}

/// The lines of `text` split at YAML's line breaks (LF, CR, CRLF, NEL, LS, PS).
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let end = match c {
            '\r' => match iter.peek() {
                Some((_, '\n')) => {
                    iter.next();
                    i + 2
                }
                _ => i + 1,
            },
            '\n' => i + 1,
            '\u{85}' | '\u{2028}' | '\u{2029}' => i + c.len_utf8(),
            _ => continue,
        };
        lines.push(&text[start..i]);
        start = end;
    }
    lines.push(&text[start..]);
    lines
}

/// The message without serde_yaml_ng's ` at line L column C` positions (the prefix says where;
/// libyaml's messages may hold a second one mid-sentence, for the context it was scanning).
fn strip_location(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(" at line ") {
        let after = &rest[i + " at line ".len()..];
        let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let line_len = digits(after);
        let tail = &after[line_len..];
        let col_len = tail.strip_prefix(" column ").map(digits).unwrap_or(0);
        if line_len == 0 || col_len == 0 {
            // Not a position: keep the text and look further on.
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        rest = &tail[" column ".len() + col_len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Layer::text(text, "p.yaml").and_then(resolve) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unknown_key_names_place_key_and_nearest() {
        let e = err("name: x\nfamily: cpu\nquantization:\n  activations:\n    dtyp: uint8\n");
        assert!(
            e.starts_with(
                "p.yaml:5:5: quantization.activations.dtyp: unknown key; did you mean 'dtype'?"
            ),
            "{e}"
        );
        let e = err("fmaily: cpu\n");
        assert!(
            e.starts_with("p.yaml:1:1: fmaily: unknown key; did you mean 'family'?"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_and_unknown_value_are_located() {
        let e = err("family: cpu\ncalibration:\n  samples: many\n");
        assert!(
            e.starts_with("p.yaml:3:12: calibration.samples: invalid type"),
            "{e}"
        );
        let e = err("family: edgetpuu\n");
        assert!(
            e.starts_with("p.yaml:1:9: family: unknown value 'edgetpuu'; did you mean 'edgetpu'?"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        let e = err("family: cpu\nops: [\n");
        assert!(e.starts_with("p.yaml:"), "{e}");
        assert!(!e.starts_with("p.yaml: "), "no line in {e}");
    }

    #[test]
    fn positions_are_cut_from_messages() {
        assert_eq!(
            strip_location(
                "could not find expected ':' at line 55 column 1, while scanning a simple key at line 54 column 3"
            ),
            "could not find expected ':', while scanning a simple key"
        );
        assert_eq!(strip_location("x at line four"), "x at line four");
        assert_eq!(strip_location("x at line 4 col"), "x at line 4 col");
        assert_eq!(strip_location("plain"), "plain");
    }

    #[test]
    fn tags_are_ignored_and_empty_items_survive_the_merge() {
        let (p, _) = resolve(
            Layer::text(
                "!p {family: cpu, description: !d text, optimize: {fusions: [&a , fold-bias]}}",
                "t.yaml",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(p.family, super::super::schema::Family::Cpu);
        assert_eq!(p.description, "text");
        assert_eq!(p.description, "text");
        // The empty anchored item is a null; it reaches the check (which refuses the name,
        // at its place) instead of failing the merge without one.
        assert_eq!(p.optimize.fusions, ["null", "fold-bias"]);
    }

    #[test]
    fn end_of_stream_positions_stay_in_the_file() {
        let e = err("family: cpu\nvation_");
        assert!(e.starts_with("p.yaml:2:8: "), "{e}");
        assert_eq!(yaml_lines("a\r\nb\rc\u{2028}d\n"), ["a", "b", "c", "d", ""]);
        assert_eq!(within_text("", 3, 1), (1, 1));
    }

    #[test]
    fn lone_carriage_returns_are_line_breaks() {
        let e = err("family: cpu\r\rops: {supported: [\r");
        assert!(e.starts_with("p.yaml:4:1: "), "{e}");
        assert!(!e.contains(" at line "), "{e}");
    }

    #[test]
    fn child_merges_over_builtin_key_by_key() {
        let text =
            "name: mine\nextends: hexagon\nquantization:\n  activations:\n    dtype: uint16\n";
        let (p, sources) = resolve(Layer::text(text, "mine.yaml").unwrap()).unwrap();
        assert_eq!(sources.files(), ["mine.yaml", "builtin:hexagon"]);
        assert_eq!(p.name, "mine");
        assert_eq!(p.extends, None);
        assert_eq!(p.family, super::super::schema::Family::Hexagon);
        assert_eq!(
            p.quantization.activations.dtype,
            super::super::schema::Dtype::Uint16
        );
        // Siblings of the changed key are inherited, not reset to defaults.
        let (h, _) = resolve(Layer::builtin("hexagon").unwrap().unwrap()).unwrap();
        assert_eq!(p.quantization.weights, h.quantization.weights);
        assert_eq!(p.quantization.min_real_range, Some(1e-4));
        assert_eq!(p.ops, h.ops);
    }

    #[test]
    fn null_unsets_and_lists_replace() {
        let text = "extends: hexagon\nquantization:\n  min_real_range: null\noptimize:\n  fusions: [fuse-conv-bn]\n";
        let (p, _) = resolve(Layer::text(text, "t.yaml").unwrap()).unwrap();
        assert_eq!(p.name, "t");
        assert_eq!(p.quantization.min_real_range, None);
        assert_eq!(p.optimize.fusions, ["fuse-conv-bn"]);
    }

    #[test]
    fn drop_removes_inherited_ops_or_says_why_not() {
        let text = "extends: hexagon\nops:\n  drop: [Conv]\n";
        let (p, _) = resolve(Layer::text(text, "t.yaml").unwrap()).unwrap();
        assert!(!p.ops.supported.contains_key("Conv"));
        assert!(p.ops.supported.contains_key("Relu"));
        assert!(p.ops.drop.is_empty());
        let e = err("extends: hexagon\nops:\n  drop: [Relu, Convv]\n");
        assert!(
            e.starts_with("p.yaml:3:16: ops.drop[1]: 'Convv' is not in the supported set"),
            "{e}"
        );
        assert!(e.contains("did you mean 'Conv'?"), "{e}");
    }

    #[test]
    fn unknown_extends_and_missing_family() {
        let e = err("extends: hexgon\n");
        assert!(
            e.starts_with("p.yaml:1:1: extends: unknown profile 'hexgon'"),
            "{e}"
        );
        assert!(e.contains("did you mean 'hexagon'?"), "{e}");
        let e = err("name: x\n");
        assert!(e.starts_with("p.yaml:1:1: family: missing"), "{e}");
        let e = err("extends: base.yaml\n");
        assert!(e.contains("may extend only built-ins"), "{e}");
    }

    #[test]
    fn file_chains_cycles_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("a.yaml", "name: a\nextends: b.yaml\n");
        write("b.yaml", "# base\nfamily: neon\nextends: ./a.yaml\n");
        let a = dir.path().join("a.yaml");
        let e = resolve(Layer::file(&a).unwrap()).unwrap_err().to_string();
        assert!(e.contains("b.yaml:3:1: extends: cycle: "), "{e}");
        assert!(e.ends_with("a.yaml"), "{e}");

        write("c.yaml", "family: cpu\nextends: sub/missing.yaml\n");
        let e = resolve(Layer::file(&dir.path().join("c.yaml")).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml:2:1: extends: "), "{e}");
        assert!(e.contains("missing.yaml: cannot read"), "{e}");

        write("d.yaml", "extends: e.yaml\n");
        write(
            "e.yaml",
            "extends: hexagon\nquantization: {activations: {dtype: uint16}}\n",
        );
        let (p, s) = resolve(Layer::file(&dir.path().join("d.yaml")).unwrap()).unwrap();
        assert_eq!(p.name, "d");
        assert_eq!(s.layers.len(), 3);
        assert_eq!(
            p.quantization.activations.dtype,
            super::super::schema::Dtype::Uint16
        );

        let e = Layer::file(&dir.path().join("nope.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.yaml: cannot read: "), "{e}");
    }

    #[test]
    fn sources_blame_the_file_that_set_a_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.yaml"),
            "family: cpu\nvalidation:\n  min_cosine: 2\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("leaf.yaml"),
            "extends: base.yaml\nname: leaf\n",
        )
        .unwrap();
        let (_, s) = resolve(Layer::file(&dir.path().join("leaf.yaml")).unwrap()).unwrap();
        let at = s.at(&KeyPath::keys(&["validation", "min_cosine"]));
        assert!(at.file.ends_with("base.yaml"), "{at}");
        assert_eq!((at.line, at.column), (3, 3));
        // A default: nothing sets it, so the leaf's first line.
        let at = s.at(&KeyPath::keys(&["shapes", "batch"]));
        assert!(at.file.ends_with("leaf.yaml"), "{at}");
        assert_eq!((at.line, at.column), (1, 1));
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_profiles() {
        for text in ["", "# nothing\n"] {
            let e = err(text);
            assert!(e.contains("family: missing"), "{e}");
        }
    }
}
