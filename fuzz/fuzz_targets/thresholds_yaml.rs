//! See kiln_tests::fuzz_bodies::thresholds_yaml.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_tests::fuzz_bodies::thresholds_yaml(data));
