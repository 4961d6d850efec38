//! A one-line progress bar on stderr: samples done, samples/s and time left. Drawn only when
//! stderr is a terminal, so CI logs stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most every 100 ms.
pub struct ProgressBar {
    label: String,
    enabled: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl ProgressBar {
    /// A bar for `label` (e.g. `calibrating`); silent unless stderr is a terminal.
    pub fn new(label: &str) -> ProgressBar {
        ProgressBar {
            label: label.to_string(),
            enabled: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    /// Shows `done` of `total` after `elapsed`.
    pub fn update(&mut self, done: usize, total: usize, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if done < total
            && self
                .last
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(now);
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 && total >= done {
            format!("ETA {:.0}s", (total - done) as f64 / rate)
        } else {
            String::new()
        };
        let width = 24;
        let filled = (width * done.min(total)).checked_div(total).unwrap_or(0);
        let _ = write!(
            std::io::stderr(),
            "\r{} [{}{}] {done}/{total}  {rate:.1}/s  {eta}   ",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
        );
        self.drawn = true;
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r{}\r", " ".repeat(80));
            self.drawn = false;
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.finish();
    }
}
