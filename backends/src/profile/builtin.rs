//! The built-in profiles, embedded from `backends/profiles/*.yaml` so the binary needs no files.

/// (name, text) of every built-in, sorted by name.
const BUILTINS: &[(&str, &str)] = &[
    ("ane", include_str!("../../profiles/ane.yaml")),
    ("ane-fp16", include_str!("../../profiles/ane-fp16.yaml")),
    ("ane-int4", include_str!("../../profiles/ane-int4.yaml")),
    ("edgetpu", include_str!("../../profiles/edgetpu.yaml")),
    ("hexagon", include_str!("../../profiles/hexagon.yaml")),
    ("neon", include_str!("../../profiles/neon.yaml")),
    ("neon-int4", include_str!("../../profiles/neon-int4.yaml")),
];

/// Warnings built-ins give on purpose, as (name, key): each is a limit of the device that the
/// profile's own comments explain (ane-int4's growing KV cache needs flexible shapes).
#[cfg(test)]
pub const DELIBERATE_WARNINGS: &[(&str, &str)] = &[("ane-int4", "shapes.static")];

/// The text of built-in `name`.
pub fn get(name: &str) -> Option<&'static str> {
    BUILTINS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The built-in names, sorted.
pub fn names() -> impl Iterator<Item = &'static str> + Clone {
    BUILTINS.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_and_found() {
        let names: Vec<_> = names().collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        for n in names {
            assert!(get(n).is_some_and(|t| !t.is_empty()), "{n}");
        }
        assert!(get("tpu").is_none());
    }
}
