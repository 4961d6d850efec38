//! A model whose external_data entries come from the fuzzer, loaded in a sandbox folder.
#![no_main]

use std::sync::OnceLock;

use kiln_tests::fuzz_bodies::ExternalSandbox;
use libfuzzer_sys::fuzz_target;

static SANDBOX: OnceLock<ExternalSandbox> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let sandbox = SANDBOX.get_or_init(|| ExternalSandbox::new().expect("sandbox"));
    kiln_tests::fuzz_bodies::external_data(sandbox, data);
});
