//! JUnit XML, which CI systems (GitLab, Jenkins, GitHub test reporters) show as test results.

use super::{Report, Status};
use crate::validate::metrics::Metrics;
use crate::validate::thresholds::num;

/// Escapes text for an XML attribute or element; control characters XML 1.0 forbids are
/// dropped, since no escape can carry them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// One `<testsuite>` named `suite`, one `<testcase>` per output.
pub fn render(report: &Report, suite: &str) -> String {
    let failures = report.outputs.iter().filter(|o| !o.passed).count();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"kiln\" tests=\"{n}\" failures=\"{failures}\">\n\
         <testsuite name=\"{s}\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\">\n",
        n = report.outputs.len(),
        s = escape(suite),
    ));
    for o in &report.outputs {
        xml.push_str(&format!(
            "<testcase classname=\"{}\" name=\"{}\">",
            escape(suite),
            escape(&o.name)
        ));
        if let Some(text) = o.failure_text() {
            let kind = match o.status {
                Status::Compared => "threshold",
                _ => "mismatch",
            };
            xml.push_str(&format!(
                "<failure type=\"{kind}\" message=\"{}\">{}</failure>",
                escape(&text),
                escape(&details(o))
            ));
        }
        xml.push_str(&format!(
            "<system-out>{}</system-out></testcase>\n",
            escape(&details(o))
        ));
    }
    xml.push_str("</testsuite>\n</testsuites>\n");
    xml
}

/// The metrics as `key=value` lines, for people reading the CI page.
fn details(o: &super::OutputReport) -> String {
    let mut lines = vec![format!(
        "reference {} / candidate {}",
        o.reference.as_deref().unwrap_or("-"),
        o.candidate.as_deref().unwrap_or("-")
    )];
    match &o.metrics {
        Some(Metrics::Float(m)) => lines.push(format!(
            "max_abs={} mean_abs={} max_rel={} rmse={} cosine={} sqnr_db={} outside={}/{}",
            num(m.max_abs),
            num(m.mean_abs),
            num(m.max_rel),
            num(m.rmse),
            num(m.cosine),
            num(m.sqnr_db),
            m.outside,
            m.elements
        )),
        Some(Metrics::Exact(m)) => {
            lines.push(format!("mismatched={}/{}", m.mismatched, m.elements))
        }
        None => {}
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_control_characters() {
        assert_eq!(escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
