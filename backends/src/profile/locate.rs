//! Where a key is in a YAML text, so an error found after parsing (a typo in an op name, an
//! impossible combination) can still name the line and column.
//!
//! The YAML parser knows positions only while it reads. So we read the text again with a
//! visitor that walks down the key path and, at the target, fails on purpose: the parser stamps
//! its own position onto that failure, and we take it from there.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence position.
    Index(usize),
}

/// A key path in a profile (`quantization.activations.dtype`, `optimize.fusions[2]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// A path of mapping keys.
    pub fn keys(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Seg::Key(k.to_string())).collect())
    }

    /// Parses a dotted path as serde_yaml_ng writes it (`ops.supported.Conv`, `a.b[2].c`);
    /// an empty string is the empty path.
    pub fn parse(s: &str) -> KeyPath {
        let mut path = KeyPath::default();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            if !key.is_empty() {
                path.0.push(Seg::Key(key.to_string()));
            }
            while let Some(inner) = rest.strip_prefix('[') {
                let Some((n, after)) = inner.split_once(']') else {
                    break;
                };
                match n.parse() {
                    Ok(i) => path.0.push(Seg::Index(i)),
                    Err(_) => break,
                }
                rest = after;
            }
        }
        path
    }

    /// This path with one more key.
    pub fn key(&self, k: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.to_string()));
        p
    }

    /// This path with one more index.
    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl std::fmt::Display for KeyPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The message of the deliberate failure; a NUL keeps it apart from anything a file says.
const FOUND: &str = "\u{0}kiln: located";

/// The 1-based (line, column) of the last step of `path` in `text`: a key's own position, or a
/// sequence element's. `None` when the path is not in the text (or the text does not parse).
pub fn locate(text: &str, path: &KeyPath) -> Option<(usize, usize)> {
    if path.0.is_empty() {
        return None;
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Walk { path: &path.0 }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Walks down `path` from the node it is given; fails with [`FOUND`] at the target.
struct Walk<'a> {
    path: &'a [Seg],
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Scalars end the walk: found if the path ends here, else the path is not in the text.
macro_rules! scalar {
    ($($name:ident: $t:ty),*) => {$(
        fn $name<E: de::Error>(self, _v: $t) -> Result<(), E> {
            self.here()
        }
    )*};
}

impl Walk<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.path.is_empty() {
            Err(E::custom(FOUND))
        } else {
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML node")
    }

    scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_i128: i128, visit_u128: u128,
        visit_f64: f64, visit_str: &str, visit_bytes: &[u8]);

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (Some(Seg::Index(target)), rest) = split(self.path) else {
            return self.here();
        };
        let mut i = 0;
        loop {
            if i == *target {
                seq.next_element_seed(Walk { path: rest })?;
                return Ok(());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (Some(Seg::Key(target)), rest) = split(self.path) else {
            return self.here();
        };
        let key = KeySeed {
            target,
            last: rest.is_empty(),
        };
        while let Some(matched) = map.next_key_seed(key)? {
            if matched {
                return map.next_value_seed(Walk { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`) arrives as an enum; its value is what the tag marks.
        use serde::de::VariantAccess;
        let (_, value) = data.variant::<IgnoredAny>()?;
        value.newtype_variant_seed(self)
    }
}

fn split(path: &[Seg]) -> (Option<&Seg>, &[Seg]) {
    match path.split_first() {
        Some((first, rest)) => (Some(first), rest),
        None => (None, path),
    }
}

/// Reads one mapping key: `Ok(true)` if it is the target, or fails with [`FOUND`] at it when
/// the key itself is what is sought.
#[derive(Clone, Copy)]
struct KeySeed<'a> {
    target: &'a str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        match (v == self.target, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (matched, _) => Ok(matched),
        }
    }

    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
name: x
quantization:
  activations:
    dtype: int4
ops:
  supported:
    Convv: {max_rank: 4}
    Relu: {}
optimize:
  fusions: [fuse-conv-bn, fuse-gelx]
list:
  - a
  - b
";

    #[test]
    fn finds_keys_at_any_depth() {
        let p = KeyPath::keys(&["quantization", "activations", "dtype"]);
        assert_eq!(locate(TEXT, &p), Some((4, 5)));
        assert_eq!(p.to_string(), "quantization.activations.dtype");
        assert_eq!(locate(TEXT, &KeyPath::keys(&["name"])), Some((1, 1)));
        let op = KeyPath::keys(&["ops", "supported", "Convv"]);
        assert_eq!(locate(TEXT, &op), Some((7, 5)));
        let inner = op.key("max_rank");
        assert_eq!(locate(TEXT, &inner), Some((7, 13)));
    }

    #[test]
    fn sees_through_tags() {
        let text = "!root\nops: !o\n  drop: [Convz]\n";
        let p = KeyPath::keys(&["ops", "drop"]).index(0);
        assert_eq!(locate(text, &p), Some((3, 10)));
    }

    #[test]
    fn parses_serde_paths() {
        for s in [
            "quantization.activations.dtype",
            "optimize.fusions[2]",
            "a[0][1].b",
            "x",
        ] {
            assert_eq!(KeyPath::parse(s).to_string(), s);
        }
        assert_eq!(KeyPath::parse(""), KeyPath::default());
        assert_eq!(KeyPath::parse("a[x]").to_string(), "a");
    }

    #[test]
    fn finds_sequence_elements_flow_and_block() {
        let p = KeyPath::keys(&["optimize", "fusions"]).index(1);
        assert_eq!(p.to_string(), "optimize.fusions[1]");
        assert_eq!(locate(TEXT, &p), Some((10, 27)));
        assert_eq!(
            locate(TEXT, &KeyPath::keys(&["list"]).index(1)),
            Some((13, 5))
        );
    }

    #[test]
    fn absent_paths_and_bad_text_give_none() {
        assert_eq!(locate(TEXT, &KeyPath::keys(&["nope"])), None);
        assert_eq!(locate(TEXT, &KeyPath::keys(&["name", "deeper"])), None);
        assert_eq!(
            locate(TEXT, &KeyPath::keys(&["optimize", "fusions"]).index(9)),
            None
        );
        assert_eq!(locate(TEXT, &KeyPath::default()), None);
    }
}
