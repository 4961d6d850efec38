//! See kiln_tests::fuzz_bodies::profile_yaml.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kiln_tests::fuzz_bodies::profile_yaml(data));
