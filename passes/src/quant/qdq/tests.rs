//! Unit tests of QDQ insertion on hand-built graphs.
