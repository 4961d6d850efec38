//! Where a YAML parse failed, for errors of the form `file:line:column: message`.

/// The 1-based line and column of a parser error (0 when the parser did not say) and its
/// message without the location the prefix already gives.
pub fn located(e: &serde_yaml_ng::Error) -> (usize, usize, String) {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    (line, column, message)
}
