#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rke2ops_fuzz::tar_staging(data));
