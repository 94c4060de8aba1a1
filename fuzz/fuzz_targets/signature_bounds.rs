#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfheal_fuzz::signature_bounds(data));
